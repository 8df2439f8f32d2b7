/**
 * Digests of upload streams computed off the thread that serves requests. sha256 of pushed
 * bytes was the largest single cost of a push on that thread (about 0.75 s per GiB), and it
 * ran in series with reading the sockets and writing the files: without it, 8 concurrent
 * 32 MiB pushes ran at 1,100 instead of 600 MiB/s, and a 4 MiB push took 9 instead of 14 ms.
 *
 * Bytes are copied into 1 MiB batches whose memory is handed (transferred, not copied) to a
 * worker thread that keeps one Hash per stream and hands the memory back to be filled again.
 * Large chunks in shared memory (a SharedArrayBuffer: the file writer's buffers) are not
 * copied at all: the worker hashes them where they are, and the update's promise settles when
 * it has, so that the memory is not filled again before. Messages to a worker are handled in
 * order, so a digest request follows every update sent before it. A stream waits
 * (backpressure) while more than MAX_PENDING_BYTES of it are not hashed yet, so memory does
 * not grow with blob size. If the worker fails, the stream's digest rejects and the caller
 * falls back to hashing the bytes on disk.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DigestAlgorithm } from './names.js';

/** Hashing of one stream of bytes, in order. */
export interface StreamDigest {
  /**
   * Adds bytes. A returned promise says to wait before sending more (backpressure), and
   * before changing the chunk's memory when it is shared (it is read where it is).
   */
  update(chunk: Buffer): Promise<void> | void;
  /** Hex digest of everything added; the stream is finished after it. */
  digest(): Promise<string>;
  /** Drops the stream without a digest (an abandoned upload). */
  dispose(): void;
}

/**
 * The digest of bytes hashed elsewhere already (an upload read from its socket by the store):
 * no more bytes can be added; one that is fails the digest, so the caller hashes the bytes on disk.
 */
export function finishedDigest(hex: string): StreamDigest {
  let extended = false;
  return {
    update: () => {
      extended = true;
    },
    digest: () => (extended ? Promise.reject(new Error('bytes were added after the digest was finished')) : Promise.resolve(hex)),
    dispose: () => undefined,
  };
}

const BATCH_BYTES = 1024 * 1024;
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** Shared chunks from this size are hashed in place; smaller ones are copied (no wait for the worker). */
const SHARED_MIN_BYTES = 256 * 1024;

/** The worker: one Hash per stream id; acknowledges each batch, answers digests. Plain CommonJS, run with eval. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'open') hashes.set(m.id, createHash(m.algorithm));
  else if (m.op === 'update') {
    hashes.get(m.id)?.update(new Uint8Array(m.bytes));
    // The memory goes back to be filled again (garbage here, it would wait for this thread's GC).
    parentPort.postMessage({ op: 'hashed', id: m.id, bytes: m.bytes }, [m.bytes]);
  } else if (m.op === 'update-shared') {
    hashes.get(m.id)?.update(new Uint8Array(m.memory, m.offset, m.length));
    parentPort.postMessage({ op: 'hashed-shared', id: m.id });
  } else if (m.op === 'digest') {
    const hash = hashes.get(m.id);
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: hash ? hash.digest('hex') : null });
  } else if (m.op === 'dispose') hashes.delete(m.id);
});
`;

type WorkerMessage =
  | { op: 'hashed'; id: number; bytes: ArrayBuffer }
  | { op: 'hashed-shared'; id: number }
  | { op: 'digest'; id: number; hex: string | null };

/** Batch memory handed back by the workers, to be filled again: no allocation per MiB pushed. */
const spareBatches: ArrayBuffer[] = [];
const MAX_SPARE_BATCHES = 16;

function takeBatch(): Buffer {
  const spare = spareBatches.pop();
  return spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(BATCH_BYTES);
}

function returnBatch(memory: ArrayBuffer): void {
  if (memory.byteLength === BATCH_BYTES && spareBatches.length < MAX_SPARE_BATCHES) spareBatches.push(memory);
}

/** A stream hashed by a worker thread. */
class WorkerStream implements StreamDigest {
  private batch: Buffer | null = null;
  private filled = 0;
  /** Bytes sent to the worker and not yet hashed. */
  private pending = 0;
  private wake: (() => void) | null = null;
  /** Shared chunks sent and not yet hashed, oldest first: what lets their writers reuse the memory. */
  private readonly sharedWaiters: Array<() => void> = [];
  private result: { resolve: (hex: string) => void; reject: (err: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly lane: HashLane,
    readonly id: number,
  ) {}

  update(chunk: Buffer): Promise<void> | void {
    if (this.failure) return; // the digest will reject, and the caller hash the bytes on disk
    if (chunk.length >= SHARED_MIN_BYTES && chunk.buffer instanceof SharedArrayBuffer) return this.sendShared(chunk);
    let offset = 0;
    while (offset < chunk.length) {
      this.batch ??= takeBatch();
      const n = chunk.copy(this.batch, this.filled, offset);
      this.filled += n;
      offset += n;
      if (this.filled === BATCH_BYTES) this.send();
    }
    if (this.pending > MAX_PENDING_BYTES) return new Promise<void>((resolve) => (this.wake = resolve));
  }

  digest(): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.filled > 0) this.send();
    return new Promise<string>((resolve, reject) => {
      this.result = { resolve, reject };
      this.lane.post({ op: 'digest', id: this.id });
    });
  }

  dispose(): void {
    this.batch = null;
    this.failure ??= new Error('the stream was dropped');
    this.lane.post({ op: 'dispose', id: this.id });
    this.lane.forget(this.id);
    // A writer waiting for acknowledgements that will no longer reach this stream goes on.
    this.release();
  }

  /** The worker hashed `bytes` more. */
  hashed(bytes: number): void {
    this.pending -= bytes;
    if (this.pending <= MAX_PENDING_BYTES) this.release();
  }

  /** The worker hashed the oldest shared chunk sent. */
  hashedShared(): void {
    this.sharedWaiters.shift()?.();
  }

  finished(hex: string | null): void {
    this.lane.forget(this.id);
    if (hex === null) this.result?.reject(new Error('the hashing worker lost this stream'));
    else this.result?.resolve(hex);
  }

  fail(err: Error): void {
    this.failure = err;
    this.result?.reject(err);
    this.release();
  }

  /** Lets a writer waiting for the worker go on (and, once the stream failed, have its shared memory back). */
  private release(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
    if (this.failure) for (const waiter of this.sharedWaiters.splice(0)) waiter();
  }

  private sendShared(chunk: Buffer): Promise<void> {
    if (this.filled > 0) this.send(); // bytes copied earlier go first
    const hashed = new Promise<void>((resolve) => this.sharedWaiters.push(resolve));
    this.lane.post({ op: 'update-shared', id: this.id, memory: chunk.buffer, offset: chunk.byteOffset, length: chunk.length });
    return hashed;
  }

  private send(): void {
    // The batch's own memory (a whole ArrayBuffer): whole, or its filled part copied once at the end.
    const whole = (this.batch as Buffer).buffer as ArrayBuffer;
    const bytes = this.filled === BATCH_BYTES ? whole : whole.slice(0, this.filled);
    if (bytes !== whole) returnBatch(whole);
    this.pending += this.filled;
    this.batch = null;
    this.filled = 0;
    this.lane.post({ op: 'update', id: this.id, bytes }, [bytes]);
  }
}

/** One worker thread and the streams it hashes. */
class HashLane {
  private worker: Worker | null = null;
  private readonly streams = new Map<number, WorkerStream>();

  open(id: number, algorithm: DigestAlgorithm): WorkerStream {
    const stream = new WorkerStream(this, id);
    this.streams.set(id, stream);
    this.post({ op: 'open', id, algorithm });
    return stream;
  }

  post(message: object, transfer: ArrayBuffer[] = []): void {
    this.start().postMessage(message, transfer);
  }

  /** Starts the worker ahead of the first stream. */
  warm(): void {
    this.start();
  }

  forget(id: number): void {
    this.streams.delete(id);
    if (this.streams.size === 0) this.worker?.unref();
  }

  private start(): Worker {
    if (!this.worker) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (m: WorkerMessage) => {
        const stream = this.streams.get(m.id);
        if (m.op === 'hashed') {
          returnBatch(m.bytes);
          stream?.hashed(m.bytes.byteLength);
        } else if (m.op === 'hashed-shared') stream?.hashedShared();
        else stream?.finished(m.hex);
      });
      worker.on('error', (err) => this.lost(worker, err));
      worker.on('exit', (code) => this.lost(worker, new Error(`the hashing worker exited (${code})`)));
      this.worker = worker;
    }
    // An idle worker does not keep the process alive; one with streams does.
    if (this.streams.size > 0) this.worker.ref();
    else this.worker.unref();
    return this.worker;
  }

  /** Every stream of a failed worker fails; the next stream starts a new worker. */
  private lost(worker: Worker, err: Error): void {
    if (this.worker !== worker) return;
    this.worker = null;
    for (const stream of this.streams.values()) stream.fail(err);
    this.streams.clear();
  }

  /** Stops the worker; streams still open fail (their callers hash on disk). */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.lost(worker, new Error('the hashing worker was stopped'));
    await worker.terminate();
  }
}

/** Worker threads for upload digests: one per core beyond the one that serves requests (at least one). */
export class Hashing {
  private readonly lanes: HashLane[];
  private next = 0;

  constructor(workers = Math.min(4, availableParallelism() - 1)) {
    this.lanes = Array.from({ length: Math.max(1, workers) }, () => new HashLane());
  }

  /**
   * Starts the workers now rather than at the first push (a server: about 30 MiB and 40 ms
   * each, which the first push would otherwise wait for).
   */
  start(): void {
    for (const lane of this.lanes) lane.warm();
  }

  /** A new stream. */
  open(algorithm: DigestAlgorithm): StreamDigest {
    const id = ++this.next;
    return (this.lanes[id % this.lanes.length] as HashLane).open(id, algorithm);
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.close()));
  }
}

let shared: Hashing | null = null;

/** The process's hashing workers (started by start() or by the first stream; idle, they do not keep the process alive). */
export function sharedHashing(): Hashing {
  shared ??= new Hashing();
  return shared;
}
