/**
 * Writes a request body into a file through a few reused, page-aligned 1 MiB buffers, up to
 * four writes at once: through the page cache, or with direct I/O (O_DIRECT) where asked and
 * where the filesystem allows it.
 *
 * Which one the store asks for (fs.ts): through the page cache when it can drop each flushed
 * part from the cache again (its UploadFlusher's `pages`, see page-cache.ts and recent-pages.ts), direct I/O otherwise. Left in
 * the cache, every pushed byte stays there and the cache grows with every blob; on the virtual
 * machine measured, writes slowed to about a quarter once some 1 GB of new cache pages had been
 * taken (`dd` of 256 MiB with a flush: 0.25 s, then about 1 s), which is why direct I/O was
 * used until then (0.39-0.47 s, and it never fills the cache). With each flushed part dropped,
 * the same freed pages are used again, and the bench's 256 MiB push went from 326-424 to
 * 418-488 MiB/s (alternating A/B, three runs each; README, Benchmarks). (The garbage collector's share of an upload is a matter of V8's heap sizing:
 * see the node options in package.json's start script and the README's Benchmarks section.)
 *
 * Direct I/O needs the memory, the file offset and the length aligned to the block size. The
 * buffers are carved from a WebAssembly.Memory, whose base V8 allocates page-aligned; the
 * first buffer of an append that starts mid-block is shortened so later writes start on a
 * block boundary; the unaligned tail and any write the kernel refuses go through the ordinary
 * descriptor instead.
 *
 * The buffers are shared memory (a SharedArrayBuffer; see the cap below), so that a tap (the
 * upload's digest, computed on a worker thread) can read each buffer where it is, while it is
 * written: a buffer is filled again only once both its write and its tap are done. Bytes are put into it with fill(),
 * which is one memcpy in Node's C++; copy() (TypedArray.prototype.set) moves bytes into shared
 * memory with V8's element-wise relaxed copy, which took three times as long.
 *
 * Shared slabs are made up to SHARED_SLABS and then kept for the life of the process: a
 * worker that was handed one keeps it alive until its own garbage collector runs, and each
 * WebAssembly memory reserves gigabytes of address space, so made and dropped over and over
 * they piled up (200 GB of address space and growing RSS after 20 rounds of 8 concurrent
 * pushes). Past them (more concurrent uploads than they serve), buffers come from ordinary
 * slabs that are dropped beyond POOL_LIMIT, and their bytes are copied for the tap.
 *
 * With a `flusher` (the store flushes blobs before acknowledging them), the appender tells it
 * after each write how far the file is written, and the flusher flushes it in the background
 * (see upload-flusher.ts) while later writes go on; the flush before 201 then has little left
 * to do. With direct I/O on the machine this was measured on (a VM whose disk takes direct
 * writes into a cache and writes them through on a flush), a 256 MiB push's last flush took
 * 20 ms instead of about 140, and the bench's median went from 337-424 to 395-427 MiB/s.
 * Through the page cache the flushes are what writes the bytes out, so they keep the disk
 * busy while the body arrives.
 */
import { constants, promises as fsp } from 'node:fs';
import { Writable } from 'node:stream';
import type { UploadTap } from './blobstore.js';

const APPEND_BUFFER_BYTES = 1024 * 1024;
const ALIGN = 4096;
const WASM_PAGE = 64 * 1024;
const SLAB_BUFFERS = 8;
/** Shared slabs made at most (8 MiB each, kept): enough for 8 concurrent uploads' buffers. */
const SHARED_SLABS = 5;
/** Ordinary buffers kept for reuse. */
const POOL_LIMIT = 32;
/** Writes of one appender that may run at once (positional, so their order does not matter). */
const MAX_IN_FLIGHT = 4;

const sharedPool: Buffer[] = [];
const pool: Buffer[] = [];
let sharedSlabs = 0;

function takeBuffer(): Buffer {
  if (sharedPool.length === 0 && sharedSlabs < SHARED_SLABS) {
    sharedSlabs++;
    sharedPool.push(...slabBuffers(true));
  }
  if (sharedPool.length > 0) return sharedPool.pop() as Buffer;
  if (pool.length === 0) pool.push(...slabBuffers(false));
  return pool.pop() as Buffer;
}

function giveBuffer(buffer: Buffer): void {
  if (buffer.buffer instanceof SharedArrayBuffer) sharedPool.push(buffer);
  else if (pool.length < POOL_LIMIT) pool.push(buffer);
}

/** Page-aligned buffers carved from a new WebAssembly memory (V8 allocates its base page-aligned). */
function slabBuffers(shared: boolean): Buffer[] {
  const pages = (SLAB_BUFFERS * APPEND_BUFFER_BYTES) / WASM_PAGE;
  const slab = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
  return Array.from({ length: SLAB_BUFFERS }, (_, i) => Buffer.from(slab.buffer, i * APPEND_BUFFER_BYTES, APPEND_BUFFER_BYTES));
}

export interface FileAppenderOptions {
  /** Try O_DIRECT for aligned writes (default true; off, or unsupported, means buffered only). */
  direct?: boolean;
  /** Sees every byte written, in order. */
  tap?: UploadTap;
  /** Told after each write that every byte below a position is written (see upload-flusher.ts). */
  flusher?: { written(end: number): void };
}

export class FileAppender extends Writable {
  private current: Buffer | null = null;
  private filled = 0;
  private limit = APPEND_BUFFER_BYTES;
  /** Each running write, with the file position it starts at. */
  private readonly inFlight = new Map<Promise<void>, number>();
  private failure: Error | null = null;
  private directRefused = false;

  private constructor(
    private readonly handle: fsp.FileHandle,
    private readonly direct: fsp.FileHandle | null,
    private position: number,
    private readonly tap: UploadTap | null,
    private readonly flusher: { written(end: number): void } | null,
  ) {
    super({ highWaterMark: APPEND_BUFFER_BYTES });
  }

  /** Opens `file` for writing at `offset` (truncating when 0, as a new upload). */
  static async open(file: string, offset: number, options: FileAppenderOptions = {}): Promise<FileAppender> {
    const useDirect = (options.direct ?? true) && constants.O_DIRECT !== undefined;
    // Both at once. A new upload (offset 0) may be created by either open; a later append
    // must find the file, so neither creates it then.
    const create = offset === 0 ? constants.O_CREAT : 0;
    const [plain, direct] = await Promise.allSettled([
      fsp.open(file, offset === 0 ? 'w' : 'r+'),
      useDirect ? fsp.open(file, constants.O_WRONLY | create | constants.O_DIRECT) : Promise.resolve(null),
    ]);
    if (plain.status === 'rejected') {
      if (direct.status === 'fulfilled') await direct.value?.close();
      throw plain.reason;
    }
    // A refused direct open (EINVAL where the filesystem has no direct I/O: tmpfs, some FUSE) means buffered writes.
    const directHandle = direct.status === 'fulfilled' ? direct.value : null;
    return new FileAppender(plain.value, directHandle, offset, options.tap ?? null, options.flusher ?? null);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.append(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.writeCurrent()
      .then(() => this.settle())
      .then(() => this.closeHandles())
      .then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // After _final the handles are closed already; closing again is harmless and ignored.
    this.settle()
      .catch(() => undefined)
      .then(() => this.closeHandles().catch(() => undefined))
      .then(() => {
        if (this.current) giveBuffer(this.current);
        this.current = null;
        callback(error);
      });
  }

  private async append(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      if (!this.current) {
        this.current = takeBuffer();
        // Shortened once when starting mid-block, so that the next write starts aligned.
        this.limit = APPEND_BUFFER_BYTES - (this.position % ALIGN);
      }
      const copied = Math.min(chunk.length - offset, this.limit - this.filled);
      this.current.fill(chunk.subarray(offset, offset + copied), this.filled, this.filled + copied);
      this.filled += copied;
      offset += copied;
      if (this.filled === this.limit) await this.writeCurrent();
    }
  }

  /** Starts writing the current buffer, once fewer than MAX_IN_FLIGHT writes are running. */
  private async writeCurrent(): Promise<void> {
    while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight.keys());
    if (this.failure) throw this.failure;
    const buffer = this.current;
    const length = this.filled;
    this.current = null;
    this.filled = 0;
    if (!buffer) return;
    if (length === 0) return giveBuffer(buffer);
    const position = this.position;
    this.position += length;
    const tapped = this.tap?.update(buffer.subarray(0, length));
    // The buffer goes back only once both are done, even when the write fails first.
    const write: Promise<void> = Promise.allSettled([this.writeAt(buffer, length, position), tapped])
      .then(([written, seen]) => {
        const err = written.status === 'rejected' ? written.reason : seen.status === 'rejected' ? seen.reason : null;
        if (err) this.failure ??= err as Error; // reported by the next write or by _final
      })
      .finally(() => {
        giveBuffer(buffer);
        this.inFlight.delete(write);
        if (!this.failure) this.flusher?.written(this.writtenTo());
      });
    this.inFlight.set(write, position);
  }

  /** Below this every write has finished (they finish in any order). */
  private writtenTo(): number {
    return this.inFlight.size > 0 ? Math.min(...this.inFlight.values()) : this.position;
  }

  /** Waits for every running write; throws the first error. */
  private async settle(): Promise<void> {
    await Promise.all(this.inFlight.keys());
    if (this.failure) throw this.failure;
  }

  private async writeAt(buffer: Buffer, length: number, position: number): Promise<void> {
    if (this.direct && !this.directRefused && position % ALIGN === 0 && length % ALIGN === 0) {
      try {
        return await writeFully(this.direct, buffer, length, position);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        // The kernel wants another alignment: from here on, buffered writes only.
        this.directRefused = true;
      }
    }
    await writeFully(this.handle, buffer, length, position);
  }

  private async closeHandles(): Promise<void> {
    await Promise.all([this.handle.close(), this.direct?.close()]);
  }
}

async function writeFully(handle: fsp.FileHandle, buffer: Buffer, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await handle.write(buffer, done, length - done, position + done);
    if (bytesWritten === 0) throw new Error(`short write at ${position + done}`);
    done += bytesWritten;
  }
}
