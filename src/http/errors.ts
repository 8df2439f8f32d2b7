/** The one place that turns errors into HTTP responses with OCI error bodies. */
import type { NextFunction, Request, Response } from 'express';
import { RegistryError } from '../registry/errors.js';
import { BlobNotFoundError } from '../storage/blobstore.js';
import { drain } from './expect-continue.js';

export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof BlobNotFoundError) return new RegistryError('BLOB_UNKNOWN', err.message);
  const status = (err as { status?: number; statusCode?: number }).status ?? (err as { statusCode?: number }).statusCode;
  const type = (err as { type?: string }).type;
  if (status === 413 || type === 'entity.too.large') return new RegistryError('SIZE_INVALID', 'request body too large', { status: 413 });
  if (status === 400 && type === 'request.aborted') return new RegistryError('BLOB_UPLOAD_INVALID', 'request aborted');
  // The JSON body parser of the administration API: a body that is not JSON, an unsupported charset.
  if (type === 'entity.parse.failed') return new RegistryError('MANIFEST_INVALID', `invalid request body: ${(err as Error).message}`, { status: 400 });
  if ((err as { expose?: boolean }).expose && status !== undefined && status >= 400 && status < 500) {
    return new RegistryError('UNSUPPORTED', (err as Error).message, { status });
  }
  const code = (err as { code?: unknown }).code;
  // The file system's ENOSPC and EDQUOT, and PostgreSQL's disk_full.
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === '53100') {
    return new RegistryError('UNKNOWN', 'the registry is out of storage space; retry once space is freed', { status: 507 });
  }
  return new RegistryError('UNKNOWN', 'internal error', { status: 500 });
}

export function sendRegistryError(res: Response, error: RegistryError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const [name, value] of Object.entries(error.headers)) res.setHeader(name, value);
  discardBody(res, error);
  res.status(error.status);
  const body = JSON.stringify(error.toBody());
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  // HEAD gets GET's headers without the body. Without a Content-Length the response's end
  // is undefined for clients that frame by headers: Node's http client then closes the
  // connection after every HEAD 404, and a push's existence checks each cost a new one.
  if (res.req.method === 'HEAD') res.end();
  else res.end(body);
}

/**
 * A body that nothing read. A refused chunk (416) is read and dropped, so that the client,
 * still sending it, reads the answer and keeps its connection. Any other body still arriving (an
 * upload refused or failed midway) would hold the connection until the idle timeout, and a
 * shutdown with it: the connection closes after the answer. A client waiting for 100 Continue
 * never sends its body, and is not asked to.
 */
function discardBody(res: Response, error: RegistryError): void {
  const req = res.req;
  if (req.complete || req.readableFlowing) return;
  if (error.status !== 416 || !drain(req)) res.setHeader('Connection', 'close');
}

export function errorHandler(err: unknown, req: Request, res: Response, _next: NextFunction): void {
  const error = toRegistryError(err);
  const log = res.locals.log ?? req.app.locals.logger;
  if (error.status >= 500) log?.error({ err }, 'request failed');
  else log?.debug({ code: error.code, message: error.message }, 'request rejected');
  sendRegistryError(res, error);
}
