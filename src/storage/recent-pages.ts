/**
 * Keeping the last bytes uploads wrote in the page cache, within a budget (see page-cache.ts
 * for why they are not simply all kept, nor all dropped at once).
 *
 * An upload's flushes (its UploadFlusher's in the background, the store's before its 201) report
 * each flushed part here instead of dropping it. Parts are kept in the order flushed; once they
 * add up to more than `budget` bytes, or come from more than `maxFiles` files, the oldest are
 * dropped from the cache. The cache then holds at most about `budget` bytes of upload pages, and
 * the pages dropped are the ones the next writes take again.
 *
 * A whole file smaller than `minFileBytes` is dropped at once all the same. Many small uploads
 * cycled through the kept pages made every push slower: in the bench's 5-layer image push (4 MiB
 * layers), 141-153 ms an image with all of them kept within 256 MiB, 101-128 with none (two runs
 * each, in turns). Large ones are where a first read from the disk costs: there, the bench's
 * first pull of a 256 MiB blob just pushed ran at 236-322 MiB/s from the disk (its later pulls at
 * 800-1200), and at 811-1184 kept; its monolithic and chunked pushes ran as fast kept as not.
 *
 * A kept part is dropped through a descriptor opened when its file was first reported, not by
 * its path: by then the upload may have moved to staging, then to committed. The descriptor is
 * closed once the file's last part is dropped and no more are to come (`done`). A file deleted
 * meanwhile keeps its disk space until then: at most the budget, and `forget` drops at once a
 * file the store deletes itself (a cancelled upload).
 */
import { promises as fsp } from 'node:fs';
import { dropPages } from './page-cache.js';

export interface RecentPagesOptions {
  /** Bytes kept cached at most (0: every part is dropped as soon as it is flushed). */
  budget: number;
  /** Files with parts kept at most (each holds a descriptor). */
  maxFiles: number;
  /** A file smaller than this, once whole, is dropped at once (see `done`). */
  minFileBytes: number;
}

interface KeptFile {
  handle: fsp.FileHandle;
  /** Below this the file's bytes were reported. */
  keptTo: number;
  /** Its parts still kept. */
  parts: number;
  /** No more parts are to come (done or forgotten). */
  closing: boolean;
}

interface KeptPart {
  file: KeptFile;
  offset: number;
  length: number;
  /** Dropped already (its file forgotten): skipped when its turn comes. */
  gone: boolean;
}

export class RecentPages {
  private readonly parts: KeptPart[] = [];
  /** Index of the oldest part still kept in `parts` (the array is compacted now and then). */
  private head = 0;
  private bytes = 0;
  /** Files with parts kept, whether or not more are to come. */
  private readonly open = new Set<KeptFile>();
  /** Files that report more parts, by the path they are written at. */
  private readonly writing = new Map<string, Promise<KeptFile | null>>();

  constructor(private readonly options: RecentPagesOptions) {}

  /** Bytes kept now (for tests and metrics). */
  get keptBytes(): number {
    return this.bytes;
  }

  /** Files with a descriptor open now. */
  get openFiles(): number {
    return this.open.size;
  }

  /**
   * The bytes of `file` below `end` (undefined: its size now) are flushed: the part not reported
   * before is kept, and the oldest parts beyond the budget are dropped. A missing file is ignored.
   */
  async flushed(file: string, end?: number): Promise<void> {
    // Never fails: a part that is not kept is left cached, which costs memory, not data.
    await this.keep(file, end).catch(() => undefined);
  }

  private async keep(file: string, end?: number): Promise<void> {
    const kept = await this.fileAt(file);
    if (!kept) return;
    const to = end ?? (await kept.handle.stat()).size;
    if (to <= kept.keptTo || kept.closing) return;
    const part: KeptPart = { file: kept, offset: kept.keptTo, length: to - kept.keptTo, gone: false };
    this.parts.push(part);
    kept.keptTo = to;
    kept.parts++;
    this.bytes += part.length;
    await this.trim();
  }

  /**
   * `file` was renamed to `to` (a promoted upload whose flushes go on there): its later parts are
   * reported under `to`.
   */
  moved(file: string, to: string): void {
    const kept = this.writing.get(file);
    if (!kept) return;
    this.writing.delete(file);
    this.writing.set(to, kept);
  }

  /**
   * No more parts of `file` will be reported (it is whole): its parts stay until their turn to
   * be dropped comes, unless the file is smaller than `minFileBytes`: then they go now.
   */
  async done(file: string): Promise<void> {
    const kept = await this.finish(file);
    if (!kept) return;
    if (kept.keptTo < this.options.minFileBytes) await this.release(kept, true);
    else if (kept.parts === 0) await this.closeFile(kept);
  }

  /** `file` is being deleted: its parts are given up now (the deletion frees their pages), and its descriptor closed. */
  async forget(file: string): Promise<void> {
    const kept = await this.finish(file);
    if (kept) await this.release(kept, false);
  }

  /** The file written at `file`, taken off those that report more parts. */
  private async finish(file: string): Promise<KeptFile | null> {
    const kept = await this.writing.get(file)?.catch(() => null);
    this.writing.delete(file);
    if (kept) kept.closing = true;
    return kept ?? null;
  }

  /** Gives up every part of `file` kept (left in place in `parts`, skipped when their turn comes), dropping its pages with `drop`, and closes it. */
  private async release(file: KeptFile, drop: boolean): Promise<void> {
    for (let i = this.head; i < this.parts.length && file.parts > 0; i++) {
      const part = this.parts[i];
      if (part.file !== file || part.gone) continue;
      part.gone = true;
      this.bytes -= part.length;
      file.parts--;
    }
    if (drop && dropPages) await dropPages(file.handle.fd, 0, 0);
    await this.closeFile(file);
  }

  /** Closes every descriptor held; what is cached stays (the store is closing). */
  async close(): Promise<void> {
    const files = [...this.open];
    this.parts.length = 0;
    this.head = 0;
    this.bytes = 0;
    this.writing.clear();
    await Promise.all(files.map((file) => this.closeFile(file)));
  }

  private fileAt(file: string): Promise<KeptFile | null> {
    let kept = this.writing.get(file);
    if (!kept) {
      kept = fsp.open(file, 'r').then(
        (handle) => {
          const opened: KeptFile = { handle, keptTo: 0, parts: 0, closing: false };
          this.open.add(opened);
          return opened;
        },
        (err: NodeJS.ErrnoException) => {
          this.writing.delete(file);
          return err.code === 'ENOENT' ? null : Promise.reject(err);
        },
      );
      this.writing.set(file, kept);
    }
    return kept;
  }

  /** Drops the oldest parts until the budget and the file limit hold. */
  private async trim(): Promise<void> {
    while (this.head < this.parts.length && (this.bytes > this.options.budget || this.open.size > this.options.maxFiles)) {
      const part = this.parts[this.head++];
      if (!part.gone) await this.drop(part);
    }
    if (this.head > 1024 && this.head * 2 > this.parts.length) {
      this.parts.splice(0, this.head);
      this.head = 0;
    }
  }

  private async drop(part: KeptPart): Promise<void> {
    const { file } = part;
    part.gone = true;
    this.bytes -= part.length;
    file.parts--;
    try {
      if (dropPages) await dropPages(file.handle.fd, part.offset, part.length);
    } finally {
      if (file.parts === 0 && file.closing) await this.closeFile(file);
    }
  }

  private async closeFile(file: KeptFile): Promise<void> {
    if (!this.open.delete(file)) return;
    await file.handle.close().catch(() => undefined);
  }
}
