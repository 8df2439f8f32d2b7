/**
 * Filesystem BlobStore. Layout under the root:
 *   uploads/<upload-id>                 scratch bytes of an upload session
 *   staging/<alg>/<hex[0:2]>/<hex>      pushed, not admitted
 *   committed/<alg>/<hex[0:2]>/<hex>    admitted
 *   tmp/                                temp files, renamed into place (atomic writes)
 * Paths are built only from validated digests and upload ids, then checked to stay
 * below the root, so no network input can name a file elsewhere. Upload bytes are written
 * by FileAppender; with `fsync` on, a blob's bytes are flushed to disk before it is staged
 * (syncUpload, then promoteUpload), or after (promoteUpload with `flushed: false`, then
 * flushContent: the registry's BlobFlushes). How they are written (see `buffered` below): through
 * the page cache, each flushed part dropped from it (the last ones of large uploads kept within
 * `cacheRecentBytes`, recent-pages.ts), where the page-cache addon is built and
 * fsync is on; otherwise with direct I/O where the filesystem allows it. Manifests' bytes, and
 * those of blobs of up to 64 KiB, are kept in the database (the registry's SMALL_BLOB_BYTES);
 * those stored before are files here too.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { Area, BlobStore, ByteRange, OpenedBlob, UploadTap } from './blobstore.js';
import { BlobNotFoundError } from './blobstore.js';
import { HEX_LENGTH, parseDigest, UPLOAD_ID_RE, type Digest, type DigestAlgorithm } from '../registry/names.js';
import { FileAppender } from './file-appender.js';
import { syncDirectory, syncFile } from './sync-file.js';
import { UploadFlusher } from './upload-flusher.js';
import { canDropCache, renameInto } from './page-cache.js';
import { RecentPages } from './recent-pages.js';
import { canIngestSockets, ingestSocket, takeSocketBody } from './socket-ingest.js';

const HIGH_WATER_MARK = 1024 * 1024;
/**
 * With fsync on, an upload is flushed in the background as it is written, by its
 * UploadFlusher, whichever requests write it: after each 8 MiB through the page cache, after
 * each 32 MiB with direct I/O. In the bench,
 * buffered uploads flushed every 8 MiB ran 8 concurrent 32 MiB pushes at 499-531 MiB/s (four
 * runs), every 16 MiB at 459-503 (two) and every 32 MiB at 425-463 (seven; a 32 MiB push then
 * waited for one flush of all its bytes at the end); see README, Benchmarks.
 */
const FLUSH_EVERY_BUFFERED = 8 * 1024 * 1024;
const FLUSH_EVERY_DIRECT = 32 * 1024 * 1024;
/**
 * Through the page cache the first flush comes after 2 MiB: an `fdatasync` here took about
 * 0.65 ms plus 0.8 ms per MiB, and a 4 MiB layer's body takes 6-8 ms to arrive, so its first
 * half is flushed while the rest comes. In a scratch replay of 5-layer image pushes (server-side
 * timings of 80 layers a run, alternating, two runs each), a layer's time from its last byte
 * to the flush done went from 4.33-4.62 ms to 3.22-3.78, and from its start to its answer
 * from 14.35-14.95 to 13.05-13.89. After 1 MiB it gained in one run and lost in the other.
 */
const FIRST_FLUSH_BUFFERED = 2 * 1024 * 1024;
/** Prefix directories made at once when a new root is initialised. */
const PREFIX_DIR_BATCH = 16;

/** Files whose last flushed bytes are kept cached at once, at most (each holds a descriptor; see RecentPages). */
const RECENT_FILES = 64;
/** Bytes of recently flushed upload data kept cached, for stores built without the option (the gateway passes storage.cacheRecentBytes, whose default is the same). */
const DEFAULT_RECENT_BYTES = 256 * 1024 * 1024;
/** An upload's flushes keep what they flushed once it has this many bytes (see RecentPages)... */
const RECENT_KEEP_FROM = 16 * 1024 * 1024;
/** ... and its last flush drops it all unless it has this many. */
const RECENT_KEEP_WHOLE_FROM = 64 * 1024 * 1024;

export interface FsBlobStoreOptions {
  /** Flush bytes to disk before a blob or manifest counts as stored (default true). */
  fsync?: boolean;
  /**
   * Bytes that uploads wrote last kept in the page cache, where flushed parts are dropped (see
   * `buffered`): default 256 MiB; 0 drops each part once flushed. See recent-pages.ts.
   */
  cacheRecentBytes?: number;
}

export class FsBlobStore implements BlobStore {
  readonly driver = 'filesystem';
  private readonly root: string;
  private readonly knownDirs = new Set<string>();

  private readonly fsync: boolean;
  /**
   * Upload bytes go through the page cache and each flushed part is dropped from it (but for the
   * last ones of large uploads, within the budget of `recent`). That needs
   * the flushes (fsync on: the kernel keeps dirty pages) and the addon that drops pages; without
   * either, uploads are written with O_DIRECT, which keeps them out of the cache. Why: see
   * FileAppender and page-cache.ts.
   */
  private readonly buffered: boolean;
  /** Where uploads go through the page cache: what keeps their last flushed bytes cached, and drops the rest. */
  private readonly recent: RecentPages | undefined;
  /** Set once the filesystem refused RENAME_NOREPLACE: staging checks, then renames. */
  private replaceOnly = false;
  /** Each open upload's background flushes (with fsync on), kept from one request to the next. */
  private readonly flushers = new Map<string, UploadFlusher>();
  /** Those of uploads promoted unflushed, until flushContent waits for them. */
  private readonly promoted = new Map<string, UploadFlusher>();

  constructor(root: string, options: FsBlobStoreOptions = {}) {
    this.root = path.resolve(root);
    this.fsync = options.fsync ?? true;
    this.buffered = this.fsync && canDropCache;
    if (this.buffered) {
      const budget = options.cacheRecentBytes ?? DEFAULT_RECENT_BYTES;
      this.recent = new RecentPages({ budget, maxFiles: RECENT_FILES, keepFrom: RECENT_KEEP_FROM, keepWholeFrom: RECENT_KEEP_WHOLE_FROM });
    }
  }

  /** How upload bytes are written (logged at start). */
  get uploadWrites(): 'page cache' | 'direct' {
    return this.buffered ? 'page cache' : 'direct';
  }

  /** Whether large upload bodies are read from their sockets (ingestUpload; logged at start). */
  get readsSockets(): boolean {
    return this.buffered && canIngestSockets;
  }

  /** Lets go of the descriptors held to drop cached pages later (RecentPages); nothing is lost. */
  async close(): Promise<void> {
    await this.recent?.close();
  }

  async init(): Promise<void> {
    for (const dir of ['uploads', 'staging', 'committed', 'tmp']) await this.ensureDir(path.join(this.root, dir));
    // Temp files are only in use while a write runs: any found at start-up were left by a crash.
    for (const name of await readdirOrEmpty(path.join(this.root, 'tmp'))) await fsp.rm(path.join(this.root, 'tmp', name), { force: true, recursive: true });
    await this.createPrefixDirs();
  }

  /**
   * The 256 prefix directories of each area and algorithm, made once for a new root (about
   * 40 ms) rather than one by one by the pushes: under the disk load of a push a mkdir took
   * about 1 ms, twice per new blob (staged, then committed).
   */
  private async createPrefixDirs(): Promise<void> {
    const dirs = (['staging', 'committed'] as const).flatMap((area) =>
      Object.keys(HEX_LENGTH).flatMap((algorithm) => Array.from({ length: 256 }, (_, i) => this.prefixDir(area, algorithm, i.toString(16).padStart(2, '0')))),
    );
    if (await isDirectory(dirs[dirs.length - 1])) return;
    for (let i = 0; i < dirs.length; i += PREFIX_DIR_BATCH) await Promise.all(dirs.slice(i, i + PREFIX_DIR_BATCH).map((dir) => this.ensureDir(dir)));
  }

  async openUploadWriter(uploadId: string, offset: number, tap?: UploadTap): Promise<Writable> {
    const flusher = this.flusherOf(uploadId);
    flusher?.rewriteFrom(offset);
    return FileAppender.open(this.uploadPath(uploadId), offset, { tap, flusher, direct: !this.buffered });
  }

  /**
   * Through the page cache only (fsync on, the page-cache addon built): the addon's thread
   * writes as FileAppender does there, and this upload's flusher flushes behind it (and hands what it flushed to `recent`).
   */
  async ingestUpload(uploadId: string, offset: number, source: object, algorithm: DigestAlgorithm): Promise<{ bytes: number; hex: string } | null> {
    if (!this.readsSockets) return null;
    const flusher = this.flusherOf(uploadId);
    const body = takeSocketBody(source);
    if (!body) return null;
    flusher?.rewriteFrom(offset);
    return ingestSocket(body, this.uploadPath(uploadId), offset, algorithm, (end) => flusher?.written(end));
  }

  /** The upload's flusher (none with fsync off); fails once one of its flushes has failed. */
  private flusherOf(uploadId: string): UploadFlusher | undefined {
    if (!this.fsync) return undefined;
    let flusher = this.flushers.get(uploadId);
    if (!flusher) {
      flusher = new UploadFlusher(this.uploadPath(uploadId), {
        every: this.buffered ? FLUSH_EVERY_BUFFERED : FLUSH_EVERY_DIRECT,
        first: this.buffered ? FIRST_FLUSH_BUFFERED : FLUSH_EVERY_DIRECT,
        pages: this.recent,
      });
      this.flushers.set(uploadId, flusher);
    }
    flusher.check();
    return flusher;
  }

  async truncateUpload(uploadId: string, size: number): Promise<void> {
    this.flushers.get(uploadId)?.rewriteFrom(size);
    await fsp.truncate(this.uploadPath(uploadId), size).catch(ignoreMissing);
  }

  async readUpload(uploadId: string): Promise<Readable> {
    const file = this.uploadPath(uploadId);
    const handle = await fsp.open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new BlobNotFoundError('uploads', uploadId);
      throw err;
    });
    return handle.createReadStream({ highWaterMark: HIGH_WATER_MARK });
  }

  async syncUpload(uploadId: string): Promise<void> {
    const file = this.uploadPath(uploadId);
    if (!this.fsync) return;
    // A failed background flush fails the upload for good (it stays, failing, until deleted).
    const flusher = this.flushers.get(uploadId);
    await flusher?.settle();
    this.flushers.delete(uploadId);
    // A zero-byte upload never opened a writer: no file, nothing to flush.
    await this.lastFlush(file, flusher?.writtenBytes);
  }

  /**
   * The flush of an upload's whole file that makes it durable (before its 201, or of content
   * promoted unflushed, where it moved): through the page cache, its pages are dropped in the
   * same job unless RecentPages keeps it, and its parts there are let go or kept. False when
   * there is no such file. `size`: the upload's, where its flusher knows it.
   */
  private async lastFlush(file: string, size: number | undefined): Promise<boolean> {
    const keep = this.recent !== undefined && size !== undefined && this.recent.keepsWhole(size);
    const found = await syncFile(file, { dropCache: this.buffered && !keep });
    if (found && keep && size !== undefined) await this.recent?.flushed(file, 0, size);
    await this.recent?.finished(file, keep);
    return found;
  }

  async promoteUpload(uploadId: string, digest: Digest, size: number, options: { flushed?: boolean } = {}): Promise<void> {
    if (options.flushed === false) return this.promoteUnflushed(uploadId, digest, size);
    const source = this.uploadPath(uploadId);
    const target = this.contentPath('staging', digest);
    await this.ensureDir(path.dirname(target));
    let outcome = await this.renameUnlessPresent(source, target);
    if (outcome !== 'renamed' && outcome !== 'missing') {
      // Content is addressed by its digest: a whole file there is the same bytes. A cut one is replaced.
      if (await this.holds(digest, size)) {
        await fsp.rm(source, { force: true });
        return;
      }
      outcome = await fsp.rename(source, target).then(
        () => 'renamed' as const,
        (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? ('missing' as const) : Promise.reject(err)),
      );
      if (outcome === 'renamed') await this.syncDir(path.dirname(target));
    }
    if (outcome === 'missing') await this.stageMissingUpload(uploadId, digest, size);
  }

  /**
   * An upload with no file to move: a zero-byte upload never opened a writer, so an empty file
   * is staged. Any other upload's bytes are gone (cancelled or purged meanwhile): nothing may be
   * staged in their place.
   */
  private async stageMissingUpload(uploadId: string, digest: Digest, size: number): Promise<void> {
    if (size !== 0) throw new BlobNotFoundError('uploads', `upload ${uploadId}`);
    await this.putStaged(digest, Buffer.alloc(0));
  }

  /**
   * promoteUpload with `flushed: false`: one rename, not flushed, that replaces whatever is there
   * (a file left unflushed by a crash may be cut: only bytes verified now may stand under the
   * digest). The upload's background flushes stop starting (they would open the old path) and
   * are handed to flushContent.
   */
  private async promoteUnflushed(uploadId: string, digest: Digest, size: number): Promise<void> {
    const source = this.uploadPath(uploadId);
    const target = this.contentPath('staging', digest);
    const flusher = this.flushers.get(uploadId);
    flusher?.stop();
    await this.ensureDir(path.dirname(target));
    try {
      await fsp.rename(source, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return this.stageMissingUpload(uploadId, digest, size);
    }
    if (!flusher) return;
    this.flushers.delete(uploadId);
    this.promoted.set(uploadId, flusher);
  }

  async flushContent(area: Area, digest: Digest, uploadId?: string): Promise<void> {
    const flusher = uploadId === undefined ? undefined : this.promoted.get(uploadId);
    if (uploadId !== undefined) this.promoted.delete(uploadId);
    if (!this.fsync) {
      if (!(await this.stat(area, digest))) throw new BlobNotFoundError(area, digest.value);
      return;
    }
    // A background flush that failed may have left bytes unwritten that a later flush reports clean.
    await flusher?.settle();
    const file = this.contentPath(area, digest);
    if (uploadId !== undefined) this.recent?.moved(this.uploadPath(uploadId), file);
    if (!(await this.lastFlush(file, flusher?.writtenBytes))) throw new BlobNotFoundError(area, digest.value);
    await syncDirectory(path.dirname(file));
  }

  /**
   * Through the addon, the rename and the flush of its directory in one job, when nothing is
   * at `target` yet ('renamed', flushed with fsync on); 'exists' or 'missing' change nothing.
   * Null when not tried: no addon, or a filesystem that cannot refuse to replace.
   */
  private async renameUnlessPresent(source: string, target: string): Promise<'renamed' | 'exists' | 'missing' | null> {
    if (!renameInto || this.replaceOnly) return null;
    try {
      return await renameInto(source, target, this.fsync);
    } catch (err) {
      // EINVAL from the rename (not from the flush after it): RENAME_NOREPLACE is not supported here.
      const { code, syscall } = err as NodeJS.ErrnoException;
      if (code !== 'EINVAL' || syscall !== 'rename') throw err;
      this.replaceOnly = true;
      return null;
    }
  }

  async deleteUpload(uploadId: string): Promise<void> {
    this.flushers.delete(uploadId);
    this.promoted.delete(uploadId);
    await this.recent?.forget(this.uploadPath(uploadId));
    await fsp.rm(this.uploadPath(uploadId), { force: true });
  }

  async putStaged(digest: Digest, data: Buffer): Promise<void> {
    const target = this.contentPath('staging', digest);
    await this.ensureDir(path.dirname(target));
    if (await this.holds(digest, data.length)) return;
    const temp = path.join(this.root, 'tmp', randomUUID());
    try {
      const handle = await fsp.open(temp, 'w');
      try {
        await handle.writeFile(data);
        if (this.fsync) await handle.datasync();
      } finally {
        await handle.close();
      }
      await fsp.rename(temp, target);
    } catch (err) {
      await fsp.rm(temp, { force: true });
      throw err;
    }
    await this.syncDir(path.dirname(target));
  }

  /** Whether staged content of `size` bytes is under `digest` already (content is addressed by digest: it is the same). */
  private async holds(digest: Digest, size: number): Promise<boolean> {
    return (await this.stat('staging', digest))?.size === size;
  }

  /** With fsync on, makes a rename into `dir` durable: a 201 must not name a file a power loss can take back. */
  private async syncDir(dir: string): Promise<void> {
    if (this.fsync) await syncDirectory(dir);
  }

  async stat(area: Area, digest: Digest): Promise<{ size: number } | null> {
    try {
      const st = await fsp.stat(this.contentPath(area, digest));
      return { size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async open(area: Area, digest: Digest, range?: ByteRange): Promise<OpenedBlob | null> {
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(this.contentPath(area, digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const { size } = await handle.stat();
    const stream = handle.createReadStream({ start: range?.start, end: range?.end, highWaterMark: HIGH_WATER_MARK });
    return { size, stream };
  }

  async commit(digest: Digest): Promise<void> {
    const source = this.contentPath('staging', digest);
    const target = this.contentPath('committed', digest);
    await this.ensureDir(path.dirname(target));
    try {
      await fsp.rename(source, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (!(await this.stat('committed', digest))) throw new BlobNotFoundError('staging', digest.value);
    }
  }

  async delete(area: Area, digest: Digest): Promise<void> {
    await fsp.rm(this.contentPath(area, digest), { force: true });
  }

  async *list(area: Area): AsyncIterable<Digest> {
    const areaDir = path.join(this.root, area);
    for (const algorithm of await readdirOrEmpty(areaDir)) {
      for (const prefix of await readdirOrEmpty(path.join(areaDir, algorithm))) {
        for (const hex of await readdirOrEmpty(path.join(areaDir, algorithm, prefix))) {
          try {
            yield parseDigest(`${algorithm}:${hex}`);
          } catch {
            // Not ours (a stray file); listing ignores it.
          }
        }
      }
    }
  }

  /** Free bytes for an unprivileged writer on the root's filesystem (what the embedded database shares by default). */
  async freeBytes(): Promise<number> {
    const st = await fsp.statfs(this.root);
    return st.bavail * st.bsize;
  }

  /** Upload ids with the time their bytes were last written, for purging stale sessions. */
  async listUploads(): Promise<Array<{ id: string; modified: Date }>> {
    const dir = path.join(this.root, 'uploads');
    const result: Array<{ id: string; modified: Date }> = [];
    for (const id of await readdirOrEmpty(dir)) {
      const st = await fsp.stat(path.join(dir, id)).catch(() => null);
      if (st) result.push({ id, modified: st.mtime });
    }
    return result;
  }

  private uploadPath(uploadId: string): string {
    if (!UPLOAD_ID_RE.test(uploadId)) throw new BlobNotFoundError('uploads', 'invalid upload id');
    return this.inside(path.join(this.root, 'uploads', uploadId));
  }

  private contentPath(area: Area, digest: Digest): string {
    const checked = parseDigest(digest.value);
    return this.inside(path.join(this.prefixDir(area, checked.algorithm, checked.hex.slice(0, 2)), checked.hex));
  }

  /** The directory that holds an area's content of one algorithm whose hex starts with `prefix`. */
  private prefixDir(area: Area, algorithm: string, prefix: string): string {
    return path.join(this.root, area, algorithm, prefix);
  }

  private inside(candidate: string): string {
    if (!candidate.startsWith(this.root + path.sep)) throw new Error(`path escapes the storage root: ${candidate}`);
    return candidate;
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true });
    this.knownDirs.add(dir);
  }
}

async function isDirectory(dir: string): Promise<boolean> {
  return (await fsp.stat(dir).catch(() => null))?.isDirectory() ?? false;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}
