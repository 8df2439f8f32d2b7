/**
 * A large request body read from its socket straight into an upload's file by a thread of the
 * addon in native/socket-ingest.c, and hashed on the way, instead of through Node's HTTP parser
 * and streams.
 *
 * Why: on the machine measured, the gateway is CPU-bound when several pushes run at once (two
 * cores for the pushing clients and the gateway). Through Node, each body arrives in 64 KiB
 * reads; each is copied by the HTTP parser into a new Buffer, passed through the request
 * stream, copied again into the file writer's buffer, and handed to the hashing worker. That
 * was about 330 ms of the event loop's CPU per 256 MiB in 8 concurrent 32 MiB pushes, 40% of it
 * in the kernel's socket reads, the rest in the parser, the streams and the copies. The thread
 * reads 1 MiB at a time into one buffer, hashes it there (OpenSSL, as the worker did) and
 * writes it. (Figures: README, Benchmarks.)
 *
 * The cost: Node's parser never sees the body, so it cannot read the connection's next
 * request; the connection closes after the answer (`Connection: close`) and the client opens
 * another. So only bodies where the saving is large are taken: a known length of at least
 * SOCKET_INGEST_MIN_BYTES, over plain TCP, that Node has not read whole yet.
 *
 * The HTTP layer offers a request's body (offerSocketBody); the store takes it (takeSocketBody)
 * only when it writes it this way, so an offered body nobody takes is read through Node as
 * before. Without the addon (no compiler at `npm ci`) nothing is taken.
 */
import { loadNativeAddon } from './native-addon.js';
import type { DigestAlgorithm } from '../registry/names.js';

/** Bodies from this size are read from their sockets (see above). */
export const SOCKET_INGEST_MIN_BYTES = 8 * 1024 * 1024;

/**
 * Ingests running at most (a thread and a 1 MiB buffer each); bodies beyond them go through
 * Node, so that many slow clients cannot make as many threads.
 */
export const MAX_RUNNING_INGESTS = 64;
let running = 0;

/** A request body handed over by the HTTP layer: Node reads no more of its socket. */
export interface SocketBody {
  /** The connection's descriptor (Node's; the addon reads a duplicate of it). */
  readonly fd: number;
  /** Body bytes Node had read already, the first of the body. */
  readonly prefix: Buffer;
  /** Bytes of the whole body, the prefix included. */
  readonly length: number;
  /** Most time the client may send nothing. */
  readonly idleMs: number;
  /** Calls `listener` if the connection closes meanwhile; returns what stops that. */
  onClose(listener: () => void): () => void;
  /** The body has been read (or failed): the connection goes back to Node's timeouts. */
  release(): void;
}

interface IngestAddon {
  ingest(
    fd: number,
    file: string,
    offset: number,
    length: number,
    prefix: Buffer,
    algorithm: string,
    idleMs: number,
    onEvent: (kind: 'progress' | 'done' | 'error', value: number, text?: string, code?: string, syscall?: string) => void,
  ): object;
  cancel(handle: object): void;
}

const addon = loadNativeAddon<IngestAddon>('socket_ingest', ['ingest', 'cancel']);

/** Whether bodies can be read from their sockets here (the addon was built and loads). */
export const canIngestSockets = addon !== null;

const offered = new WeakMap<object, () => SocketBody | null>();

/** Lets a store take `source`'s body from its socket: `take` hands it over, or says no (null). */
export function offerSocketBody(source: object, take: () => SocketBody | null): void {
  if (canIngestSockets) offered.set(source, take);
}

/**
 * The body of `source` handed over, when it was offered and can be, and fewer than
 * MAX_RUNNING_INGESTS run; after this, only the addon may read it.
 */
export function takeSocketBody(source: object): SocketBody | null {
  const take = offered.get(source);
  offered.delete(source);
  return take && running < MAX_RUNNING_INGESTS ? take() : null;
}

/**
 * Writes `body` into `file` from `offset` (a new file when 0) and hashes it with `algorithm`.
 * `onProgress(end)` says every byte below file offset `end` is written. Rejects with an Error
 * carrying `code` (ECONNABORTED: the client closed the connection early; ETIMEDOUT: it sent
 * nothing for body.idleMs; ECANCELED: the connection was closed here) and `syscall`.
 */
export function ingestSocket(
  body: SocketBody,
  file: string,
  offset: number,
  algorithm: DigestAlgorithm,
  onProgress: (end: number) => void,
): Promise<{ bytes: number; hex: string }> {
  if (!addon) return Promise.reject(new Error('the socket-ingest addon is not built'));
  const native = addon;
  running++;
  return new Promise((resolve, reject) => {
    let stopWatching = () => {};
    const finish = () => {
      running--;
      stopWatching();
      body.release();
    };
    let handle: object;
    try {
      handle = native.ingest(body.fd, file, offset, body.length, body.prefix, algorithm, body.idleMs, (kind, value, text, code, syscall) => {
        if (kind === 'progress') return onProgress(value);
        finish();
        if (kind === 'done') return resolve({ bytes: value, hex: text as string });
        reject(Object.assign(new Error(text), { code, syscall, bytesRead: value }));
      });
    } catch (err) {
      finish();
      reject(err as Error);
      return;
    }
    stopWatching = body.onClose(() => native.cancel(handle));
  });
}
