/**
 * Durable commits for the embedded database. PGlite starts PostgreSQL with fsync off (`-F`),
 * and its Emscripten file system would make fsync a no-op anyway: a commit reached the page
 * cache only, so a power failure could take back manifests already acknowledged. Here:
 *
 *  - PostgreSQL runs with fsync on, and the file system's `fsync` stream operation (which
 *    Emscripten's fsync() calls where a file system has one) is a real fdatasync. Checkpoints
 *    flush data files, pg_control and directories as PostgreSQL intends, each after the log
 *    written so far (a checkpoint record must be on disk before pg_control names it).
 *  - In a checkpoint that housekeeping runs (DurableNodeFS.gatheringFlushes), the flushes of
 *    data files (tables, indexes, the commit log's segments) are gathered instead, and made
 *    together, on several threads at once, before PostgreSQL writes or flushes any other file:
 *    pg_control above all, which must not name the checkpoint before its data is on disk. One
 *    after the other, a checkpoint's hundred or so data files took 110-125 ms of its 160-210
 *    (a scratch trace of fdatasync calls under manifest PUTs at c=16), and the whole gateway
 *    waits for it. Nothing reads or writes those files' data in between; the flushes follow
 *    the log written so far, as each single flush does.
 *  - The log itself is written at each commit (wal_sync_method fdatasync, which Emscripten
 *    leaves a no-op) and flushed by WalFlusher when Database.sync() asks, before a write
 *    request is answered (app.ts), off the event loop: one flush serves every commit made
 *    before it started (group commit), the database takes the next transaction meanwhile,
 *    and a request that commits several times waits for one flush. Another request may
 *    read a commit before the flush that makes it durable has ended (about a millisecond);
 *    PostgreSQL shows a commit only once its log is flushed.
 *
 * This reaches into PGlite's Emscripten module (its NODEFS stream operations); openPglite
 * refuses to start when that is not there to hook rather than run without durable commits.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NodeFS } from '@electric-sql/pglite/nodefs';
import type { PGlite } from '@electric-sql/pglite';
import { syncPathsNow } from '../storage/page-cache.js';
import { syncFile } from '../storage/sync-file.js';

/** The parts of an Emscripten file stream and NODEFS that the hooks use. */
interface EmscriptenStream {
  path?: string;
  nfd?: number;
  node: unknown;
}
interface NodeFsInternals {
  realPath(node: unknown): string;
  stream_ops: {
    write: (stream: EmscriptenStream, ...rest: unknown[]) => number;
    fsync?: (stream: EmscriptenStream) => number;
  };
}
interface ModuleInternals {
  NODEFS?: NodeFsInternals;
  FS: { ErrnoError: new (errno: number) => Error };
}

/** Emscripten's EIO: PostgreSQL PANICs on a failed fsync rather than go on without it. */
const EMSCRIPTEN_EIO = 29;

/** Threads that flush a checkpoint's gathered data files at once (see syncFilesNow). */
const FLUSH_THREADS = 8;
/** Data files that flushWrittenData flushes at a time. */
const PREFLUSH_CONCURRENCY = 2;

/**
 * Flushes `files` (fdatasync) and returns, blocking, once all are on disk: the number flushed,
 * a missing file skipped. On several threads at once where the page-cache addon is built, one
 * after the other otherwise.
 */
export function syncFilesNow(files: readonly string[]): number {
  if (files.length === 0) return 0;
  if (syncPathsNow) return syncPathsNow([...files], Math.min(FLUSH_THREADS, files.length));
  return syncFilesInTurn(files);
}

/** syncFilesNow without the addon: one file after the other (exported for its tests). */
export function syncFilesInTurn(files: readonly string[]): number {
  let flushed = 0;
  for (const file of files) {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    try {
      fs.fdatasyncSync(fd);
      flushed++;
    } finally {
      fs.closeSync(fd);
    }
  }
  return flushed;
}

/** What a file of the data directory is to the hooks: the log, data whose flushes a checkpoint may gather, or anything else. */
type FileKind = 'log' | 'data' | 'other';

/** Tables, indexes and their forks (base/<db>/<node>[_fsm|_vm|_init][.<segment>], the same in global/), and the SLRU segments (commit log and the like). */
const DATA_FILE = /^(?:(?:base\/\d+|global)\/\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?|(?:pg_xact|pg_commit_ts|pg_subtrans|pg_serial|pg_notify|pg_multixact\/(?:offsets|members))\/[0-9A-F]+)$/;

/** The kind of `relative`, a path in the data directory. */
export function fileKind(relative: string): FileKind {
  const slashed = relative.split(path.sep).join('/');
  if (slashed.startsWith('pg_wal/')) return 'log';
  return DATA_FILE.test(slashed) ? 'data' : 'other';
}

/** Flushes the write-ahead log segments written since the last flush (see the module comment). */
export class WalFlusher {
  /** Log segments (host paths) written since the running flush took its list. */
  private readonly dirty = new Set<string>();
  /** The segments the running flush is syncing. */
  private inFlight: string[] = [];
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** fdatasync calls made on log segments (tests look at it). */
  syncs = 0;
  /** Flushes PostgreSQL asked for itself (checkpoints, new log segments, renames). */
  fileSyncs = 0;
  /** Set by a failed flush: from then on no commit is acknowledged. */
  failure: Error | null = null;

  written(file: string): void {
    this.dirty.add(file);
  }

  /** Resolves once every log byte written before the call is on disk. */
  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.dirty.size === 0) return this.running ?? Promise.resolve();
    if (!this.running) return (this.running = this.run());
    // The running flush may have missed writes made since it started: one more follows it,
    // for every caller that comes meanwhile.
    this.queued ??= this.running.then(() => {
      this.queued = null;
      return this.flush();
    });
    return this.queued;
  }

  /** Flushes at once, blocking: before PostgreSQL flushes anything that must not reach the disk ahead of the log. */
  flushNow(): void {
    const files = [...new Set([...this.inFlight, ...this.dirty])];
    this.dirty.clear();
    // The running flush's segments are on disk now: the next flushNow (a checkpoint makes one
    // per file it flushes) need not flush them again while that flush waits for its turn.
    this.inFlight = [];
    // A missing segment was recycled after a checkpoint flushed it.
    this.syncs += syncFilesNow(files);
  }

  private async run(): Promise<void> {
    this.inFlight = [...this.dirty];
    this.dirty.clear();
    try {
      for (const file of this.inFlight) await this.sync(file);
    } catch (err) {
      this.failure = new Error(`flushing the embedded database's write-ahead log failed: ${(err as Error).message}`);
      throw this.failure;
    } finally {
      this.inFlight = [];
      this.running = null;
    }
  }

  private async sync(file: string): Promise<void> {
    // A missing segment was recycled after a checkpoint flushed it.
    if (await syncFile(file)) this.syncs++;
  }
}

/** PGlite's NodeFS with real fsync and a record of the log segments written (see the module comment). */
export class DurableNodeFS extends NodeFS {
  /** Set once the hooks are in place, before PostgreSQL starts. */
  hooked = false;
  /** Gathered flushes made, and the files in them (tests look at them). */
  gatheredBatches = 0;
  gatheredFiles = 0;
  /** Data files whose flush the running checkpoint asked for; null when not gathering. */
  private gathered: Set<string> | null = null;
  /** Data files written since flushWrittenData took the last list. */
  private dataWritten = new Set<string>();

  constructor(
    dataDir: string,
    readonly wal: WalFlusher,
  ) {
    super(dataDir);
  }

  override async init(pg: PGlite, opts: Parameters<NodeFS['init']>[1]) {
    const { emscriptenOpts } = await super.init(pg, opts);
    const preRun = [...((emscriptenOpts.preRun as Array<(mod: unknown) => void> | undefined) ?? []), (mod: unknown) => this.hook(mod)];
    return { emscriptenOpts: { ...emscriptenOpts, preRun } as typeof emscriptenOpts };
  }

  /**
   * Runs `checkpoint`, a CHECKPOINT statement that nothing else runs beside, with the flushes
   * of data files gathered (see the module comment). Whatever is still gathered when it ends
   * is flushed then; should that fail, no later commit is acknowledged.
   */
  async gatheringFlushes<T>(checkpoint: () => Promise<T>): Promise<T> {
    this.gathered = new Set();
    try {
      return await checkpoint();
    } finally {
      try {
        this.flushGathered();
      } catch (err) {
        this.wal.failure ??= new Error(`flushing the embedded database's data files after a checkpoint failed: ${(err as Error).message}`);
        throw this.wal.failure;
      } finally {
        this.gathered = null;
      }
    }
  }

  /**
   * Flushes the data files written since the last call, off the event loop, `concurrency` at a
   * time (the thread pool also serves the log's flushes and uploads): the pages PostgreSQL wrote
   * out of its buffers between checkpoints. Run before a checkpoint, it leaves the checkpoint
   * only what it writes itself to wait for. Resolves to the number of files flushed.
   */
  async flushWrittenData(concurrency = PREFLUSH_CONCURRENCY): Promise<number> {
    const files = [...this.dataWritten];
    this.dataWritten.clear();
    let next = 0;
    let flushed = 0;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, files.length) }, async () => {
        while (next < files.length) if (await syncFile(files[next++]!)) flushed++;
      }),
    );
    return flushed;
  }

  /** Flushes gathered and not made yet (tests look at it). */
  get pendingFlushes(): number {
    return this.gathered?.size ?? 0;
  }

  /** The gathered flushes, after the log written so far. */
  private flushGathered(): void {
    if (!this.gathered?.size) return;
    const files = [...this.gathered];
    this.gathered.clear();
    this.wal.flushNow();
    this.wal.fileSyncs += syncFilesNow(files);
    this.gatheredBatches++;
    this.gatheredFiles += files.length;
  }

  /** Puts the hooks into PGlite's Emscripten module (init's preRun; public for the tests, which hand it a stand-in). */
  hook(module: unknown): void {
    const mod = module as ModuleInternals;
    const nodefs = mod.NODEFS;
    if (!nodefs || typeof nodefs.stream_ops?.write !== 'function' || typeof nodefs.realPath !== 'function') return;
    const files = new WeakMap<EmscriptenStream, { file: string; kind: FileKind }>();
    const fileOf = (stream: EmscriptenStream): { file: string; kind: FileKind } => {
      let known = files.get(stream);
      if (!known) {
        const file = nodefs.realPath(stream.node);
        known = { file, kind: fileKind(path.relative(this.rootDir, file)) };
        files.set(stream, known);
      }
      return known;
    };
    const write = nodefs.stream_ops.write;
    const self = this;
    nodefs.stream_ops.write = function (this: unknown, stream: EmscriptenStream, ...rest: unknown[]): number {
      const { file, kind } = fileOf(stream);
      // Gathered flushes go first: the file written may be pg_control, naming the checkpoint.
      if (kind === 'other' && self.gathered?.size) self.flushOrFail(mod);
      const written = write.call(this, stream, ...rest);
      if (kind === 'log') self.wal.written(file);
      else if (kind === 'data') self.dataWritten.add(file);
      return written;
    };
    nodefs.stream_ops.fsync = (stream: EmscriptenStream): number => {
      const { file, kind } = fileOf(stream);
      if (kind === 'data' && this.gathered) {
        this.gathered.add(file);
        return 0;
      }
      try {
        this.flushGathered();
        this.wal.flushNow();
        if (stream.nfd !== undefined) fs.fdatasyncSync(stream.nfd);
        this.wal.fileSyncs++;
      } catch {
        throw new mod.FS.ErrnoError(EMSCRIPTEN_EIO);
      }
      return 0;
    };
    this.hooked = true;
  }

  /** flushGathered for a hook: a failure is PostgreSQL's EIO (it PANICs rather than go on). */
  private flushOrFail(mod: ModuleInternals): void {
    try {
      this.flushGathered();
    } catch {
      throw new mod.FS.ErrnoError(EMSCRIPTEN_EIO);
    }
  }
}

/**
 * PostgreSQL's options for the embedded database: PGlite's own, with fsync on (its `-F` turns
 * it off) and the log written with fdatasync, which WalFlusher then does off the event loop.
 */
export function durableStartParams(defaults: readonly string[]): string[] {
  return [...defaults.filter((p) => p !== '-F'), '-c', 'fsync=on', '-c', 'wal_sync_method=fdatasync'];
}
