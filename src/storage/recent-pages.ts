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
 * A whole file smaller than `minFileBytes` is dropped at once all the same, and until a file
 * is known to reach that size its parts count as unsure: of those, only `minFileBytes` are kept
 * in all, the oldest dropped past it. Many small uploads cycled through the kept pages made
 * every push slower: in the bench's 5-layer image push (4 MiB
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
  /**
   * A file smaller than this, once whole, is dropped at once (see `done`); before it is known to
   * reach this size, its parts are unsure, and unsure parts are kept up to this many bytes in all.
   */
  minFileBytes: number;
}

interface KeptFile {
  handle: fsp.FileHandle;
  /** Below this the file's bytes were reported. */
  keptTo: number;
  /** Its parts still kept, and their bytes. */
  parts: number;
  bytes: number;
  /** No more parts are to come (done or forgotten). */
  closing: boolean;
}

interface KeptPart {
  file: KeptFile;
  offset: number;
  length: number;
  /** Let go already (dropped, or its file given up): skipped when its turn comes. */
  gone: boolean;
}

/** Parts in the order kept; those let go meanwhile stay until their turn, then are skipped. */
class PartQueue {
  private items: KeptPart[] = [];
  private head = 0;

  push(part: KeptPart): void {
    this.items.push(part);
  }

  /** The oldest part not let go, taken off the queue; undefined when none is left. */
  take(): KeptPart | undefined {
    while (this.head < this.items.length) {
      const part = this.items[this.head++];
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      if (!part.gone) return part;
    }
    return undefined;
  }

  /** Calls `visit` with each part not let go, oldest first. */
  forEachLive(visit: (part: KeptPart) => void): void {
    for (let i = this.head; i < this.items.length; i++) if (!this.items[i].gone) visit(this.items[i]);
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

export class RecentPages {
  /** Every part kept, oldest first. */
  private readonly parts = new PartQueue();
  /** The parts of files not yet known to reach minFileBytes (some may have since), oldest first. */
  private readonly unsure = new PartQueue();
  private bytes = 0;
  private unsureBytes = 0;
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
   * before is kept, and the oldest parts beyond the limits are dropped. A missing file is ignored.
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
    const wasUnsure = this.isUnsure(kept);
    kept.keptTo = to;
    if (wasUnsure && !this.isUnsure(kept)) this.unsureBytes -= kept.bytes; // its earlier parts are sure now
    kept.parts++;
    kept.bytes += part.length;
    this.bytes += part.length;
    this.parts.push(part);
    if (this.isUnsure(kept)) {
      this.unsureBytes += part.length;
      this.unsure.push(part);
    }
    await this.trim();
  }

  private isUnsure(file: KeptFile): boolean {
    return file.keptTo < this.options.minFileBytes;
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
    if (this.isUnsure(kept)) await this.release(kept, true);
    else if (kept.parts === 0) await this.closeFile(kept);
  }

  /** `file` is being deleted: its parts are given up now (the deletion frees their pages), and its descriptor closed. */
  async forget(file: string): Promise<void> {
    const kept = await this.finish(file);
    if (kept) await this.release(kept, false);
  }

  /** Closes every descriptor held; what is cached stays (the store is closing). */
  async close(): Promise<void> {
    const files = [...this.open];
    this.parts.clear();
    this.unsure.clear();
    this.bytes = 0;
    this.unsureBytes = 0;
    this.writing.clear();
    await Promise.all(files.map((file) => this.closeFile(file)));
  }

  /** The file written at `file`, taken off those that report more parts. */
  private async finish(file: string): Promise<KeptFile | null> {
    const kept = await this.writing.get(file)?.catch(() => null);
    this.writing.delete(file);
    if (kept) kept.closing = true;
    return kept ?? null;
  }

  private fileAt(file: string): Promise<KeptFile | null> {
    let kept = this.writing.get(file);
    if (!kept) {
      kept = fsp.open(file, 'r').then(
        (handle) => {
          const opened: KeptFile = { handle, keptTo: 0, parts: 0, bytes: 0, closing: false };
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

  /** Drops the oldest unsure parts past their limit, then the oldest parts until the budget and the file limit hold. */
  private async trim(): Promise<void> {
    while (this.unsureBytes > this.options.minFileBytes) {
      const part = this.unsure.take();
      if (!part) break;
      if (this.isUnsure(part.file)) await this.drop(part);
    }
    while (this.bytes > this.options.budget || this.open.size > this.options.maxFiles) {
      const part = this.parts.take();
      if (!part) break;
      await this.drop(part);
    }
  }

  /** Counts `part` out (it stays in the queues, skipped). */
  private letGo(part: KeptPart): void {
    const { file } = part;
    part.gone = true;
    this.bytes -= part.length;
    if (this.isUnsure(file)) this.unsureBytes -= part.length;
    file.parts--;
    file.bytes -= part.length;
  }

  private async drop(part: KeptPart): Promise<void> {
    this.letGo(part);
    const { file } = part;
    try {
      if (dropPages) await dropPages(file.handle.fd, part.offset, part.length);
    } finally {
      if (file.parts === 0 && file.closing) await this.closeFile(file);
    }
  }

  /** Lets go of every part of `file` (dropping its pages with `drop`) and closes it. */
  private async release(file: KeptFile, drop: boolean): Promise<void> {
    // Its parts are found in the queue of all parts, from the oldest still there.
    this.parts.forEachLive((part) => {
      if (part.file === file) this.letGo(part);
    });
    if (drop && dropPages) await dropPages(file.handle.fd, 0, 0);
    await this.closeFile(file);
  }

  private async closeFile(file: KeptFile): Promise<void> {
    if (!this.open.delete(file)) return;
    await file.handle.close().catch(() => undefined);
  }
}
