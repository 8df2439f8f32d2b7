/**
 * Keeping the last bytes large uploads wrote in the page cache, within a budget (see
 * page-cache.ts for why they are not simply all kept, nor all dropped at once).
 *
 * An upload's flushes (its UploadFlusher's in the background, the store's before its 201) drop
 * what they flushed from the cache in the same job, as before, until the upload reaches
 * `keepFrom` bytes (`keeps`); from there each flushed part is reported here instead and kept.
 * Parts are kept in the order flushed; once they add up to more than `budget` bytes, or come from
 * more than `maxFiles` files, the oldest are dropped. The cache then holds at most about `budget`
 * bytes of upload pages, and the pages dropped are the ones the next writes take again. An upload
 * that ends under `keepWholeFrom` bytes is dropped whole by its last flush (`keepsWhole`), and its
 * parts here let go (`finished`).
 *
 * Why only large ones: many small uploads cycled through kept pages made every push slower. In
 * the bench's 5-layer image push (4 MiB layers), 141-153 ms an image with all uploads kept within
 * 256 MiB, 101-128 with none (two runs each, in turns). Large ones are where a first read from
 * the disk costs: there, the bench's first pull of a 256 MiB blob just pushed ran at 236-322
 * MiB/s from the disk (its later pulls at 800-1200), and at 811-1184 kept; its monolithic and
 * chunked pushes ran as fast kept as not. Keeping parts only from `keepFrom` on spares uploads
 * that stay small the extra jobs (a descriptor, a later drop) and leaves no more of their pages
 * cached than before.
 *
 * A kept part is dropped through a descriptor opened when its file's first part was kept, not by
 * its path: by then the upload may have moved to staging, then to committed. The descriptor is
 * closed once the file's last part is dropped and no more are to come. A file deleted meanwhile
 * keeps its disk space until then: at most the budget, and `forget` lets go at once of a file the
 * store deletes itself (a cancelled upload).
 */
import { promises as fsp } from 'node:fs';
import { dropPages } from './page-cache.js';

export interface RecentPagesOptions {
  /** Bytes kept cached at most (0: none; every flush drops what it flushed). */
  budget: number;
  /** Files with parts kept at most (each holds a descriptor). */
  maxFiles: number;
  /** An upload's flushes keep what they flushed once it has this many bytes; below, they drop it. */
  keepFrom: number;
  /** An upload that ends with fewer bytes is dropped whole by its last flush. */
  keepWholeFrom: number;
}

interface KeptFile {
  handle: fsp.FileHandle;
  /** Below this the file's bytes were reported. */
  keptTo: number;
  /** Its parts still kept. */
  parts: number;
  /** No more parts are to come (finished or forgotten). */
  closing: boolean;
}

interface KeptPart {
  file: KeptFile;
  offset: number;
  length: number;
  /** Let go already (dropped, or its file given up): skipped when its turn comes. */
  gone: boolean;
}

export class RecentPages {
  /** Every part kept, oldest first from `head`; those let go meanwhile are skipped when their turn comes. */
  private parts: KeptPart[] = [];
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

  /** Whether a flush of an upload up to `end` keeps what it flushed (reported to `flushed`), rather than dropping it. */
  keeps(end: number): boolean {
    return this.options.budget > 0 && end >= this.options.keepFrom;
  }

  /** Whether an upload of `size` bytes stays cached once whole, rather than being dropped by its last flush. */
  keepsWhole(size: number): boolean {
    return this.options.budget > 0 && size >= this.options.keepWholeFrom;
  }

  /**
   * The bytes of `file` from `from` to `end` are flushed: the part not reported before is kept,
   * and the oldest parts beyond the limits are dropped. A missing file is ignored.
   */
  async flushed(file: string, from: number, end: number): Promise<void> {
    // Never fails: a part that is not kept is left cached, which costs memory, not data.
    await this.keep(file, from, end).catch(() => undefined);
  }

  private async keep(file: string, from: number, end: number): Promise<void> {
    const kept = await this.fileAt(file);
    if (!kept || kept.closing) return;
    const offset = Math.max(from, kept.keptTo);
    if (end <= offset) return;
    kept.keptTo = end;
    kept.parts++;
    this.bytes += end - offset;
    this.parts.push({ file: kept, offset, length: end - offset, gone: false });
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
   * No more parts of `file` will be reported: it is whole and flushed. Kept whole (`keepsWhole`),
   * its parts stay until their turn to be dropped comes; otherwise its last flush dropped its
   * pages, and its parts are let go now.
   */
  async finished(file: string, keptWhole: boolean): Promise<void> {
    const kept = await this.finish(file);
    if (!kept) return;
    if (!keptWhole) await this.release(kept);
    else if (kept.parts === 0) await this.closeFile(kept);
  }

  /** `file` is being deleted: its parts are let go now (the deletion frees their pages), and its descriptor closed. */
  async forget(file: string): Promise<void> {
    const kept = await this.finish(file);
    if (kept) await this.release(kept);
  }

  /** Closes every descriptor held; what is cached stays (the store is closing). */
  async close(): Promise<void> {
    const files = [...this.open];
    this.parts = [];
    this.head = 0;
    this.bytes = 0;
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
      this.parts = this.parts.slice(this.head);
      this.head = 0;
    }
  }

  /** Counts `part` out (it stays in `parts`, skipped when its turn comes). */
  private letGo(part: KeptPart): void {
    part.gone = true;
    this.bytes -= part.length;
    part.file.parts--;
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

  /** Lets go of every part of `file` and closes it. */
  private async release(file: KeptFile): Promise<void> {
    for (let i = this.head; i < this.parts.length && file.parts > 0; i++) {
      if (this.parts[i].file === file && !this.parts[i].gone) this.letGo(this.parts[i]);
    }
    await this.closeFile(file);
  }

  private async closeFile(file: KeptFile): Promise<void> {
    if (!this.open.delete(file)) return;
    await file.handle.close().catch(() => undefined);
  }
}
