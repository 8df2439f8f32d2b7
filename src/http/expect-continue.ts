/**
 * `Expect: 100-continue`: the client holds its body back until the server says to send it.
 * Node would answer `100 Continue` at once, before any check, and a large blob refused by
 * authentication (401), authorisation (403) or a limit (413) would still cross the network. The
 * gateway answers it when a handler first reads the body instead; a request answered before
 * that gets its final status without the body sent. Node closes such a connection after that
 * answer (the client may or may not send the body then), so nothing is left to discard.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

const awaiting = new WeakSet<IncomingMessage>();

/** For a request that expects 100-continue: answers it on the first read of the body. */
export function continueOnRead(req: IncomingMessage, res: ServerResponse): void {
  awaiting.add(req);
  const read = req._read;
  req._read = function (this: IncomingMessage, size: number): void {
    req._read = read;
    awaiting.delete(req);
    // Never after the final answer: Node reads the rest of a request it finished to discard it.
    if (!res.headersSent) res.writeContinue();
    read.call(this, size);
  };
}

/** Answers 100-continue now, if the request expects it and it is not answered yet (its body is about to be read another way). */
export function continueNow(req: IncomingMessage, res: ServerResponse): void {
  if (awaiting.delete(req) && !res.headersSent) res.writeContinue();
}

/** Requests whose body is read from the socket, not through Node (socket-body.ts). */
const detached = new WeakSet<IncomingMessage>();

/** Marks `req`'s body as read from its socket: nothing of it is left to discard. */
export function markDetached(req: IncomingMessage): void {
  detached.add(req);
}

/**
 * Discards a request body nothing will read, so the connection can be reused; not one the
 * client still holds back for 100 Continue (asking for it only to drop it), nor one read from
 * the socket (socket-body.ts): false then, and the connection closes after the answer.
 */
export function drain(req: IncomingMessage): boolean {
  if (awaiting.has(req) || detached.has(req)) return false;
  if (!req.readableEnded) req.resume();
  return true;
}
