/**
 * Flushes one upload's file to disk in the background while requests write it, so that the
 * flush before its 201 has little left to do, and (through the page cache) drops each flushed
 * part from the cache again, so that the cache does not grow with the upload; of a large
 * upload, it hands them to the store's RecentPages instead, which keeps the last ones cached
 * within a budget (see FileAppender, page-cache.ts and recent-pages.ts for why both matter on
 * the machine measured).
 *
 * It belongs to the upload, not to a request: the store keeps one per open upload, and every
 * writer of the upload reports to it (FileAppender's `flusher`). An upload sent in chunks is
 * then flushed every `every` bytes as one sent whole is, and a chunk's request does not wait
 * for a flush that it started: that flush goes on while the client sends the next chunk. In a
 * scratch replay of the bench's chunked push (256 MiB in 8 MiB PATCHes), the PATCHes took
 * 389-460 ms this way and the closing PUT 7-12 ms; 710-725 and 9-18 ms when each PATCH waited
 * for the flush it started; 485-573 and 169-192 ms when each request counted only its own
 * bytes (no PATCH reached 8 MiB: the closing PUT flushed everything). README, Benchmarks.
 *
 * Only the flush before the 201 (the store's syncUpload, after `settle`) makes the bytes
 * durable; the background flushes are ahead of it. A background flush that fails fails the
 * upload: every later writer and the final flush report it (a flush of a descriptor opened
 * after the error would not).
 */
import { syncFile } from './sync-file.js';
import type { RecentPages } from './recent-pages.js';

export interface UploadFlusherOptions {
  /** Start a flush once this many bytes more than flushed are written. */
  every: number;
  /** The first flush, sooner (default `every`): a small blob's flush before its 201 then has part of it done. */
  first?: number;
  /**
   * What each flush covered is dropped from the page cache in the same job, or, once the upload
   * is large enough to keep (RecentPages' `keeps`), reported there. None: left cached.
   */
  pages?: RecentPages;
}

export class UploadFlusher {
  /** Below this the file is flushed (and reported to `pages`). */
  private flushedTo = 0;
  /** Below this every byte is written, as the writers last told. */
  private writtenTo = 0;
  private running: Promise<void> | null = null;
  private failure: Error | null = null;
  /** Rewrites so far (see rewriteFrom): a flush that ran across one does not move `flushedTo`. */
  private cuts = 0;
  /** Set by stop(): no flush starts any more. */
  private stopped = false;
  /** Flushes started. */
  flushes = 0;

  /** Bytes written so far, as the writers last told (the upload's size once they are done). */
  get writtenBytes(): number {
    return this.writtenTo;
  }

  constructor(
    private readonly file: string,
    private readonly options: UploadFlusherOptions,
  ) {}

  /** Told that every byte below `end` is written. */
  written(end: number): void {
    this.writtenTo = Math.max(this.writtenTo, end);
    this.startDue();
  }

  /**
   * Starts a flush when `every` bytes (`first` before the first flush) are written and not
   * flushed, unless one runs: then when it ends, so that bytes written meanwhile do not wait
   * for a later write to be flushed.
   */
  private startDue(): void {
    const due = this.flushedTo === 0 ? (this.options.first ?? this.options.every) : this.options.every;
    if (this.running || this.failure || this.stopped || this.writtenTo - this.flushedTo < due) return;
    this.flushes++;
    this.running = this.flushTo(this.writtenTo)
      .catch((err: Error) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.running = null;
        this.startDue();
      });
  }

  /**
   * Starts no more flushes (one running goes on; settle() waits for it): the file is about to
   * move, and a flush started later would open it where it was.
   */
  stop(): void {
    this.stopped = true;
  }

  /** The first failure of a background flush, thrown. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Waits until no flush runs (one that ends may start the next), then throws the first failure of any. */
  async settle(): Promise<void> {
    while (this.running) await this.running;
    this.check();
  }

  /**
   * The bytes from `size` on are to be written again: the file was cut there (a failed write
   * undone), or a writer starts there. Nothing changes when no byte past it was written.
   */
  rewriteFrom(size: number): void {
    if (size >= this.writtenTo) return;
    this.flushedTo = Math.min(this.flushedTo, size);
    this.writtenTo = size;
    this.cuts++;
  }

  private async flushTo(end: number): Promise<void> {
    const from = this.flushedTo;
    const cuts = this.cuts;
    const { pages } = this.options;
    const keep = pages?.keeps(end) ?? false;
    // With pages, what is not kept is dropped in the same job as the flush.
    const dropCache = pages !== undefined && !keep && end > from && { offset: from, length: end - from };
    // Through a descriptor of its own: the writer that reported may close its own before this ends.
    if (!(await syncFile(this.file, { dropCache }))) throw new Error(`the upload's file ${this.file} is gone`);
    if (this.cuts !== cuts) return;
    this.flushedTo = end;
    if (keep) await pages?.flushed(this.file, from, end);
  }
}
