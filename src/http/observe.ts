/** Request id, structured access log and request metrics for every request. */
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;

export function observeRequests(logger: Logger, metrics: Metrics) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const started = process.hrtime.bigint();
    // Read now: a connection cut before the response finished (a body refused mid-stream) has no socket by then.
    const remote = req.socket.remoteAddress;
    const offered = req.headers['x-request-id'];
    const requestId = typeof offered === 'string' && REQUEST_ID_RE.test(offered) ? offered : randomUUID();
    res.setHeader('X-Request-Id', requestId);
    res.locals.requestId = requestId;
    res.locals.log = logger.child({ reqId: requestId });
    res.locals.route = 'other';

    // Handlers that read a body add its size here (listening to 'data' would consume it).
    res.locals.bytesIn = 0;
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = res.locals.route as string;
      const received = res.locals.bytesIn as number;
      const labels = { method: req.method, route, status: String(res.statusCode) };
      metrics.requests.inc(labels);
      metrics.duration.observe(labels, seconds);
      if (received > 0) metrics.bytesIn.inc({ route }, received);
      const sent = Number(res.getHeader('Content-Length') ?? 0);
      if (sent > 0 && req.method !== 'HEAD') metrics.bytesOut.inc({ route }, sent);
      res.locals.log.info(
        {
          method: req.method,
          url: req.originalUrl.slice(0, 512),
          route,
          status: res.statusCode,
          ms: Math.round(seconds * 1000 * 10) / 10,
          bytesIn: received,
          remote,
        },
        'request',
      );
    });
    next();
  };
}
