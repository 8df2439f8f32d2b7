/** Wires configuration into a running gateway: database, storage, registry, HTTP server. */
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parseAddr, type GatewayConfig } from './config/config.js';
import { openDatabase, type Database } from './db/database.js';
import { MetadataStore } from './db/metadata.js';
import { createApp } from './http/app.js';
import { createLogger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { Registry } from './registry/registry.js';
import type { Admit } from './registry/admission.js';
import { FsBlobStore } from './storage/fs.js';
import { instrumentBlobStore } from './storage/instrumented.js';

export interface RunningGateway {
  url: string;
  port: number;
  registry: Registry;
  db: Database;
  logger: Logger;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  admit?: Admit;
  defaultMetrics?: boolean;
}

export async function startGateway(config: GatewayConfig, options: StartOptions = {}): Promise<RunningGateway> {
  const logger = options.logger ?? createLogger(config.log.level);
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
  const store = instrumentBlobStore(new FsBlobStore(config.storage.root), metrics);
  await store.init();
  const db = await openDatabase({
    url: config.database.url || undefined,
    pgliteDir: path.join(config.storage.root, 'pglite'),
    poolSize: config.database.poolSize,
    onIdleError: (err) => logger.warn({ err }, 'idle database connection failed; the pool replaces it'),
  });
  const registry = new Registry({
    metadata: new MetadataStore(db),
    store,
    logger,
    admit: options.admit,
    limits: {
      maxManifestBytes: config.limits.maxManifestBytes,
      maxBlobBytes: config.limits.maxBlobBytes,
      maxPageSize: config.limits.maxPageSize,
      deleteEnabled: config.storage.deleteEnabled,
    },
  });

  const app = createApp({
    registry,
    logger,
    metrics,
    ready: async () => (await db.query('SELECT 1 AS ok')).length === 1,
  });
  const server = http.createServer({ requestTimeout: 0, headersTimeout: config.http.headersTimeoutSeconds * 1000 }, app);
  server.keepAliveTimeout = 65_000;
  server.setTimeout(config.http.idleTimeoutSeconds * 1000);

  const { host, port } = parseAddr(config.http.addr);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost === '0.0.0.0' ? '127.0.0.1' : shownHost}:${address.port}`;

  const purgeAfterMs = config.uploads.purgeAfterSeconds * 1000;
  const purgeTimer = setInterval(() => {
    registry.purgeStaleUploads(new Date(Date.now() - purgeAfterMs)).catch((err) => logger.error({ err }, 'upload purge failed'));
  }, config.uploads.purgeIntervalSeconds * 1000);
  purgeTimer.unref();

  logger.info(
    { url, storage: config.storage.root, database: db.kind, addr: `${address.address}:${address.port}` },
    'gateway listening',
  );

  return {
    url,
    port: address.port,
    registry,
    db,
    logger,
    async close() {
      clearInterval(purgeTimer);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await db.close();
    },
  };
}
