/**
 * Offers an upload request's body to be read from its socket by the store (see
 * storage/socket-ingest.ts), and hands it over when the store takes it: Node stops reading the
 * socket, the bytes it had read already go along, and the connection closes after the answer.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { offerSocketBody as offer, SOCKET_INGEST_MIN_BYTES, type SocketBody } from '../storage/socket-ingest.js';
import { continueNow, markDetached } from './expect-continue.js';

/** Idle limit when the server set none on the socket. */
const DEFAULT_IDLE_MS = 120_000;

/** Offers `req`'s body when it is large, of known length, over plain TCP. */
export function offerSocketBody(req: IncomingMessage, res: ServerResponse, length: number | null): void {
  if (length === null || length < SOCKET_INGEST_MIN_BYTES || req.headers['transfer-encoding'] !== undefined) return;
  offer(req, () => takeBody(req, res, length));
}

function takeBody(req: IncomingMessage, res: ServerResponse, length: number): SocketBody | null {
  const socket = req.socket as Socket & { encrypted?: boolean; _handle?: { fd?: number } | null };
  const fd = socket._handle?.fd;
  // Read whole already (nothing to gain), TLS (the bytes on the socket are not the body), or no descriptor.
  if (req.complete || req.readableEnded || socket.encrypted || typeof fd !== 'number' || fd < 0 || socket.destroyed) return null;
  continueNow(req, res);
  // From here Node reads no more of the socket: reading what it has buffered must not start it again.
  socket.pause();
  req._read = () => undefined;
  const buffered: Buffer[] = [];
  for (let chunk = req.read() as Buffer | null; chunk !== null; chunk = req.read() as Buffer | null) buffered.push(chunk);
  const prefix = Buffer.concat(buffered);
  if (prefix.length > length) throw new Error(`the request body has more than its ${length} bytes`);
  markDetached(req);
  // Node's parser still waits for the body, so it cannot read a next request on this connection.
  res.setHeader('Connection', 'close');
  const idleMs = socket.timeout && socket.timeout > 0 ? socket.timeout : DEFAULT_IDLE_MS;
  // The addon keeps time while it reads; Node, seeing no reads, would cut the connection.
  socket.setTimeout(0);
  return {
    fd,
    prefix,
    length,
    idleMs,
    onClose(listener) {
      socket.once('close', listener);
      return () => socket.off('close', listener);
    },
    release() {
      if (!socket.destroyed) socket.setTimeout(idleMs);
    },
  };
}
