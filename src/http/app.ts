/** Express app assembly: observation, health, metrics, the distribution API, errors. */
import express, { type Express } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.js';
import type { Registry } from '../registry/registry.js';
import { distributionRouter } from './distribution.js';
import { errorHandler } from './errors.js';
import { observeRequests } from './observe.js';

export interface AppDeps {
  registry: Registry;
  logger: Logger;
  metrics: Metrics;
  /** Resolves when the gateway can serve (database reachable, storage ready). */
  ready: () => Promise<boolean>;
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  app.locals.logger = deps.logger;
  app.use(observeRequests(deps.logger, deps.metrics));

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
    res.setHeader('Content-Type', deps.metrics.registry.contentType);
    res.end(await deps.metrics.registry.metrics());
  });

  app.use('/v2', distributionRouter(deps.registry));
  app.use(errorHandler);
  return app;
}
