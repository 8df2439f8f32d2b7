/**
 * Durable commits for the embedded database. PGlite starts PostgreSQL with fsync off (`-F`),
 * and its Emscripten file system would make fsync a no-op anyway: a commit reached the page
 * cache only, so a power failure could take back manifests already acknowledged. Here:
 *
 *  - PostgreSQL runs with fsync on, and the file system's `fsync` stream operation (which
 *    Emscripten's fsync() calls where a file system has one) is a real fdatasync. Checkpoints
 *    flush data files, pg_control and directories as PostgreSQL intends, each after the log
 *    written so far (a checkpoint record must be on disk before pg_control names it).
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
import { NodeFS } from '@electric-sql/pglite/nodefs';
import type { PGlite } from '@electric-sql/pglite';
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
    for (const file of files) {
      let fd: number;
      try {
        fd = fs.openSync(file, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // recycled after a checkpoint flushed it
        throw err;
      }
      try {
        fs.fdatasyncSync(fd);
        this.syncs++;
      } finally {
        fs.closeSync(fd);
      }
    }
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

  constructor(
    dataDir: string,
    readonly wal: WalFlusher,
  ) {
    super(dataDir);
  }

  override async init(pg: PGlite, opts: Parameters<NodeFS['init']>[1]) {
    const { emscriptenOpts } = await super.init(pg, opts);
    const preRun = [...((emscriptenOpts.preRun as Array<(mod: unknown) => void> | undefined) ?? []), (mod: unknown) => this.hook(mod as ModuleInternals)];
    return { emscriptenOpts: { ...emscriptenOpts, preRun } as typeof emscriptenOpts };
  }

  private hook(mod: ModuleInternals): void {
    const nodefs = mod.NODEFS;
    if (!nodefs || typeof nodefs.stream_ops?.write !== 'function' || typeof nodefs.realPath !== 'function') return;
    const { wal } = this;
    const logFiles = new WeakMap<EmscriptenStream, string | null>();
    const logFileOf = (stream: EmscriptenStream): string | null => {
      let file = logFiles.get(stream);
      if (file === undefined) {
        file = stream.path?.includes('/pg_wal/') ? nodefs.realPath(stream.node) : null;
        logFiles.set(stream, file);
      }
      return file;
    };
    const write = nodefs.stream_ops.write;
    nodefs.stream_ops.write = function (this: unknown, stream: EmscriptenStream, ...rest: unknown[]): number {
      const written = write.call(this, stream, ...rest);
      const file = logFileOf(stream);
      if (file) wal.written(file);
      return written;
    };
    nodefs.stream_ops.fsync = (stream: EmscriptenStream): number => {
      try {
        wal.flushNow();
        if (stream.nfd !== undefined) fs.fdatasyncSync(stream.nfd);
        wal.fileSyncs++;
      } catch {
        throw new mod.FS.ErrnoError(EMSCRIPTEN_EIO);
      }
      return 0;
    };
    this.hooked = true;
  }
}

/**
 * PostgreSQL's options for the embedded database: PGlite's own, with fsync on (its `-F` turns
 * it off) and the log written with fdatasync, which WalFlusher then does off the event loop.
 */
export function durableStartParams(defaults: readonly string[]): string[] {
  return [...defaults.filter((p) => p !== '-F'), '-c', 'fsync=on', '-c', 'wal_sync_method=fdatasync'];
}
