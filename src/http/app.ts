/** Express app assembly: observation, health, metrics, the distribution API, errors. */
import http from 'node:http';
import express, { type Express, type RequestHandler, type Response } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { Registry } from '../registry/registry.js';
import { distributionRouter } from './distribution.js';
import { errorHandler } from './errors.js';
import { RegistryError } from '../registry/errors.js';
import { observeRequests } from './observe.js';
import { adminRouter } from './admin.js';
import { OPEN_GUARD, type HttpAuth } from './auth.js';
import type { RobotStore } from '../auth/robots.js';
import type { Gate } from '../admission/gate.js';
import type { AdmissionStore } from '../db/admissions.js';
import { admissionsRouter } from './admissions.js';
import { auditRouter } from './audit.js';
import type { AuditLog } from '../audit/log.js';

export interface AppDeps {
  registry: Registry;
  logger: Logger;
  metrics: Metrics;
  /** Resolves when the gateway can serve (database reachable, storage ready). */
  ready: () => Promise<boolean>;
  /** Absent when authentication is disabled. */
  auth?: HttpAuth;
  robots: RobotStore;
  audit: AuditLog;
  /** Absent when the gate is disabled. */
  gate?: { gate: Gate; admissions: AdmissionStore };
  /** Proxies whose X-Forwarded-* headers are believed (express "trust proxy"). */
  trustedProxies: string[];
  /** Resolves once every database commit so far is on disk (Database.sync). */
  durable: () => Promise<void>;
}

/**
 * A request that may write (any method but GET and HEAD) is answered once what it committed
 * is on disk: the end of its response waits for the database's flush (one flush for all the
 * commits of the request, and for those of the requests answered with it). When the flush
 * fails, the connection is closed without an answer: the client must not take it as done.
 * Answers that set `res.locals.flushLater` are not held: progress of an upload session (its
 * start, a PATCH), whose bytes reach the disk only when the upload is closed, and a client
 * that finds a session lost starts again; and, with storage.blobFlush `manifest`, the upload's
 * close, whose blob is made durable before a manifest that references it is accepted (that
 * manifest's answer waits for the flush, which covers every commit before it).
 */
function answerWritesWhenDurable(durable: () => Promise<void>): RequestHandler {
  return (req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    const end = res.end as (...args: unknown[]) => Response;
    res.end = function (this: Response, ...args: unknown[]) {
      if (res.locals.flushLater === true) return end.apply(this, args);
      durable().then(
        () => end.apply(this, args),
        (err: unknown) => {
          (res.locals.log as Logger | undefined)?.error({ err }, 'a commit could not be made durable: closing the connection without an answer');
          res.destroy(err as Error);
        },
      );
      return this;
    } as Response['end'];
    next();
  };
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  app.set('trust proxy', deps.trustedProxies.length > 0 ? deps.trustedProxies : false);
  app.locals.logger = deps.logger;
  app.use(observeRequests(deps.logger, deps.metrics));
  app.use(answerWritesWhenDurable(deps.durable));
  // No name, tag, digest or parameter of these APIs can hold U+0000 (nor can PostgreSQL text).
  app.use((req, _res, next) => {
    if (/%00/i.test(req.url)) return next(new RegistryError('UNSUPPORTED', 'the request URL contains a NUL character (%00)', { status: 400 }));
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.locals.route = 'healthz';
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    res.locals.route = 'readyz';
    const ok = await deps.ready().catch(() => false);
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'not ready' });
  });
  app.get('/metrics', async (_req, res) => {
    res.locals.route = 'metrics';
    const body = await deps.metrics.registry.metrics();
    res.setHeader('Content-Type', deps.metrics.registry.contentType);
    // Set for HEAD too (Node's server sets it only for GET), so the connection stays reusable.
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  });

  const guard = deps.auth ?? OPEN_GUARD;
  if (deps.auth) app.use('/auth/token', deps.auth.tokenRouter());
  if (deps.gate) app.use('/gateway/v1', admissionsRouter(guard, deps.gate.admissions, deps.gate.gate));
  app.use('/gateway/v1', auditRouter(guard, deps.audit));
  app.use('/gateway/v1', adminRouter(guard, deps.robots));
  app.use('/v2', distributionRouter(deps.registry, guard));
  app.use(errorHandler);
  return app;
}

/** The classes the HTTP server makes each request and response from (`http.createServer`'s options). */
export interface RequestClasses {
  IncomingMessage: typeof http.IncomingMessage;
  ServerResponse: typeof http.ServerResponse<http.IncomingMessage>;
}

/**
 * Two classes whose prototypes become the app's request and response prototypes, for the
 * server to make its requests and responses from. Express sets the prototype of every request
 * and response to the app's own (`Object.setPrototypeOf` in `app.handle`); made from these
 * classes they have it already, and that call changes nothing.
 *
 * Why: a prototype changed on each request cost V8 dearly. Most of what a request allocated
 * then outlived the next minor garbage collection (about 8 KB of each manifest GET, 30 KB of
 * each manifest PUT), and each of those collections, one every 0.2 s under load, held the
 * event loop for 5-10 ms (up to 27). With these classes, under one client's manifest GETs a
 * collection took 0.5-0.7 ms and kept 4 KB, and the gateway answered 21,500-23,200 GETs in
 * 4 s instead of 12,500-15,500 (the two builds served at once, in turns). In an Express
 * "hello world" the same change took the collections from 4-17 ms to 0.1-0.3 ms.
 */
export function requestClasses(app: Express): RequestClasses {
  class GatewayRequest extends http.IncomingMessage {}
  class GatewayResponse extends http.ServerResponse {}
  app.request = adoptPrototype(GatewayRequest.prototype, app.request);
  app.response = adoptPrototype(GatewayResponse.prototype, app.response);
  return { IncomingMessage: GatewayRequest, ServerResponse: GatewayResponse };
}

/** Makes `target` (a class's prototype) stand in for `source`: the same own properties and the same prototype. */
function adoptPrototype<T extends object>(target: object, source: T): T {
  Object.setPrototypeOf(target, Object.getPrototypeOf(source));
  Object.defineProperties(target, Object.getOwnPropertyDescriptors(source));
  return target as T;
}
