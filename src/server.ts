/** Wires configuration into a running gateway: database, storage, registry, HTTP server. */
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parseAddr, type GatewayConfig } from './config/config.js';
import { openDatabase, type Database } from './db/database.js';
import { MetadataStore } from './db/metadata.js';
import { createApp, requestClasses } from './http/app.js';
import { continueOnRead } from './http/expect-continue.js';
import { createLogger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { Registry } from './registry/registry.js';
import { sharedHashing } from './registry/hashing.js';
import type { Admit } from './registry/admission.js';
import { FsBlobStore } from './storage/fs.js';
import { instrumentBlobStore } from './storage/instrumented.js';
import { AccessControl } from './auth/access.js';
import { Authenticator } from './auth/authenticator.js';
import { HtpasswdFile, upsertHtpasswdUser } from './auth/htpasswd.js';
import { Lockout } from './auth/lockout.js';
import { RobotStore } from './auth/robots.js';
import { loadOrCreateSigningKey, TokenService } from './auth/tokens.js';
import { HttpAuth } from './http/auth.js';
import { AuditLog } from './audit/log.js';
import { AdmissionStore } from './db/admissions.js';
import { Gate } from './admission/gate.js';
import { PolicySet } from './policy/loader.js';
import { evaluate } from './policy/evaluate.js';
import { TrivyScanner } from './scan/trivy.js';
import { ScanService } from './scan/service.js';

/**
 * How often the embedded database looks for housekeeping due (autovacuum's naptime; a look
 * is one small statistics query, and work is done only past autovacuum's thresholds).
 */
const DB_MAINTENANCE_INTERVAL_MS = 5_000;

/** TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are always on). */
const MODERN_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

async function createAuth(config: GatewayConfig, robots: RobotStore, logger: Logger, audit: AuditLog): Promise<HttpAuth> {
  const htpasswd = new HtpasswdFile(config.auth.htpasswd, logger);
  if (htpasswd.size() === 0 && (await robots.list()).length === 0) await bootstrapAdmin(config, logger);
  const tokens = new TokenService(loadOrCreateSigningKey(config.auth.tokenKeyFile), {
    issuer: config.auth.issuer,
    service: config.auth.service,
    ttlSeconds: config.auth.tokenTtlSeconds,
  });
  const authenticator = new Authenticator({
    htpasswd,
    robots,
    tokens,
    access: new AccessControl(config.auth),
    lockout: new Lockout({
      slowdownAfter: config.auth.lockoutSlowdownAfter,
      maxFailures: config.auth.lockoutMaxFailures,
      windowSeconds: config.auth.lockoutWindowSeconds,
      lockSeconds: config.auth.lockoutSeconds,
    }),
    logger,
    onSecurityEvent: async (event) => {
      await audit.appendNow({
        action: event.action,
        principal: event.principal,
        requestId: event.requestId,
        detail: { source: event.source, reason: event.reason },
      });
    },
  });
  return new HttpAuth(authenticator, {
    realm: config.auth.realm,
    service: config.auth.service,
    anonymousAllowed: config.auth.anonymousPull.length > 0,
  });
}

/**
 * A fresh gateway has no users: create `admin` with a random password so that it is
 * usable and never open. The password goes to a 0600 file beside the htpasswd file,
 * not into the log.
 */
async function bootstrapAdmin(config: GatewayConfig, logger: Logger): Promise<void> {
  const password = randomBytes(18).toString('base64url');
  await upsertHtpasswdUser(config.auth.htpasswd, 'admin', password);
  const file = path.join(path.dirname(config.auth.htpasswd), 'initial-admin-password');
  writeFileSync(file, password + '\n', { mode: 0o600 });
  logger.warn(
    { user: 'admin', passwordFile: file, htpasswd: config.auth.htpasswd },
    `created the first user "admin"; its password is in ${file}. Add users with "gateway users add NAME"`,
  );
}

/**
 * Start-up could not use what a setting names (the storage root, the database, the listen
 * address, a TLS file). The message says which setting and why; `main` prints it without a
 * stack when the cause is the system's or the server's (it has an error code).
 */
export class StartupError extends Error {
  constructor(what: string, cause: unknown) {
    super(`${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'StartupError';
  }
}

async function using<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw new StartupError(what, err);
  }
}

function readSetting(file: string, setting: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new StartupError(`cannot read ${file} (${setting})`, err);
  }
}

/**
 * The app as the server's request listener, with a shutdown that stops accepting connections
 * and lets the requests in progress finish for up to `graceMs` (a push's PATCH or PUT, a
 * pull): each is answered with `Connection: close` where its headers are not out yet, and each
 * connection is closed once idle; then the connections left are cut. `drain` says how many.
 */
function drainable(app: http.RequestListener) {
  let draining = false;
  const inProgress = new Set<http.ServerResponse>();
  const handler: http.RequestListener = (req, res) => {
    if (draining) res.setHeader('Connection', 'close');
    inProgress.add(res);
    res.once('close', () => inProgress.delete(res));
    app(req, res);
  };
  const drain = async (server: http.Server, graceMs: number): Promise<number> => {
    draining = true;
    for (const res of inProgress) if (!res.headersSent) res.setHeader('Connection', 'close');
    let cut = 0;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const idle = setInterval(() => server.closeIdleConnections(), DRAIN_POLL_MS);
    const deadline = setTimeout(() => {
      server.getConnections((_err, count) => (cut = count ?? 0));
      server.closeAllConnections();
    }, graceMs);
    server.closeIdleConnections();
    await closed;
    clearInterval(idle);
    clearTimeout(deadline);
    return cut;
  };
  return { handler, drain };
}

const DRAIN_POLL_MS = 50;

/** A database URL as it may be shown: without its password. */
function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** The audit trail as configured: checkpoints signed with the configured (or a generated) key. */
export function configuredAuditLog(config: GatewayConfig, db: Database, logger?: Logger): AuditLog {
  return new AuditLog(db, {
    checkpointKey: loadOrCreateSigningKey(
      config.audit.checkpointKeyFile || path.join(config.storage.root, 'audit', 'checkpoint-key.pem'),
      'audit checkpoint key',
    ),
    checkpointEvery: config.audit.checkpointEvery,
    logger,
  });
}

export interface RunningGateway {
  url: string;
  port: number;
  registry: Registry;
  db: Database;
  logger: Logger;
  audit: AuditLog;
  /** Absent when the gate is off (gate.enabled=false or an injected admit hook). */
  gate?: Gate;
  policies?: PolicySet;
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
  const files = new FsBlobStore(config.storage.root, { fsync: config.storage.fsync, cacheRecentBytes: config.storage.cacheRecentBytes });
  if (config.storage.fsync && !files.readsSockets) {
    logger.warn(
      'the native addons (native/page-cache.c, native/socket-ingest.c) are not built: uploads are written with O_DIRECT, or large bodies read through Node, slower on the machines measured (README, Benchmarks)',
    );
  }
  const store = instrumentBlobStore(files, metrics);
  await using(`cannot use the storage root ${config.storage.root} (storage.root, GATEWAY_STORAGE_ROOT)`, () => store.init());
  const db = await using(
    config.database.url
      ? `cannot open the database at ${withoutPassword(config.database.url)} (database.url, GATEWAY_DATABASE_URL)`
      : `cannot open the embedded database in ${path.join(config.storage.root, 'pglite')}`,
    () =>
      openDatabase({
        url: config.database.url || undefined,
        pgliteDir: path.join(config.storage.root, 'pglite'),
        poolSize: config.database.poolSize,
        onIdleError: (err) => logger.warn({ err }, 'idle database connection failed; the pool replaces it'),
      }),
  );
  const audit = configuredAuditLog(config, db, logger);
  sharedHashing().start();
  const registry = new Registry({
    metadata: new MetadataStore(db),
    store,
    logger,
    admit: options.admit,
    record: async (tx, event) => {
      await audit.append(tx, event);
    },
    limits: {
      maxManifestBytes: config.limits.maxManifestBytes,
      maxBlobBytes: config.limits.maxBlobBytes,
      maxPageSize: config.limits.maxPageSize,
      deleteEnabled: config.storage.deleteEnabled,
      reserveBytes: config.storage.reserveBytes,
    },
    // Without fsync nothing is flushed: nothing to put off.
    blobFlush: config.storage.fsync ? config.storage.blobFlush : 'upload',
  });
  const recovered = await registry.blobFlushes.recover();
  if (recovered.kept + recovered.forgotten > 0) {
    logger.warn(recovered, 'checked the blobs pushed before an unclean stop whose flush was pending: whole ones kept, others forgotten');
  }

  const robots = new RobotStore(db, audit);
  const gated = config.gate.enabled && !options.admit ? await startGate(config, registry, audit, db, logger) : undefined;
  if (!config.gate.enabled) logger.warn('the gate is DISABLED (gate.enabled=false): every push is admitted at once, without policies');
  const auth = config.auth.enabled ? await createAuth(config, robots, logger, audit) : undefined;
  if (!auth) logger.warn('authentication is DISABLED (auth.enabled=false): anyone who reaches this port can push, pull and delete');

  const app = createApp({
    registry,
    logger,
    metrics,
    ready: async () => (await db.query('SELECT 1 AS ok')).length === 1,
    auth,
    robots,
    audit,
    gate: gated ? { gate: gated.gate, admissions: gated.admissions } : undefined,
    trustedProxies: config.http.trustedProxies,
    durable: () => db.sync(),
  });
  const serverOptions = { requestTimeout: 0, headersTimeout: config.http.headersTimeoutSeconds * 1000, ...requestClasses(app) };
  const { handler, drain } = drainable(app);
  const tls = Boolean(config.http.tlsCert);
  const server = tls
    ? https.createServer(
        {
          ...serverOptions,
          cert: readSetting(config.http.tlsCert, 'http.tlsCert, GATEWAY_HTTP_TLS_CERT'),
          key: readSetting(config.http.tlsKey, 'http.tlsKey, GATEWAY_HTTP_TLS_KEY'),
          minVersion: 'TLSv1.2',
          ciphers: MODERN_CIPHERS,
          honorCipherOrder: true,
        },
        handler,
      )
    : http.createServer(serverOptions, handler);
  // With a listener, Node leaves `100 Continue` to the gateway (see expect-continue.ts).
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    continueOnRead(req, res);
    handler(req, res);
  });
  server.keepAliveTimeout = 65_000;
  server.setTimeout(config.http.idleTimeoutSeconds * 1000);

  const { host, port } = parseAddr(config.http.addr);
  await using(`cannot listen on ${config.http.addr} (http.addr, GATEWAY_HTTP_ADDR)`, () =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    }),
  );
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${tls ? 'https' : 'http'}://${shownHost === '0.0.0.0' ? '127.0.0.1' : shownHost}:${address.port}`;

  const purgeAfterMs = config.uploads.purgeAfterSeconds * 1000;
  const purgeTimer = setInterval(() => {
    registry.purgeStaleUploads(new Date(Date.now() - purgeAfterMs)).catch((err) => logger.error({ err }, 'upload purge failed'));
  }, config.uploads.purgeIntervalSeconds * 1000);
  purgeTimer.unref();
  const checkpointTimer = setInterval(() => {
    audit.checkpoint().catch((err) => logger.error({ err }, 'audit checkpoint failed'));
  }, config.audit.checkpointIntervalSeconds * 1000);
  checkpointTimer.unref();
  const maintenanceTimer = setInterval(() => {
    db.maintain()
      .then((done) => {
        if (!done) return;
        // Vacuums and analyses come every few seconds under load; checkpoints at most every 64 MiB of log.
        const level = done.checkpointed ? 'info' : 'debug';
        logger[level]({ ...done, ms: Math.round(done.ms), checkpointMs: Math.round(done.checkpointMs) }, 'embedded database maintained');
      })
      .catch((err) => logger.error({ err }, 'database maintenance failed'));
  }, DB_MAINTENANCE_INTERVAL_MS);
  maintenanceTimer.unref();

  logger.info(
    { url, storage: config.storage.root, uploadWrites: files.uploadWrites, bodiesFromSocket: files.readsSockets, database: db.kind, addr: `${address.address}:${address.port}` },
    'gateway listening',
  );

  return {
    url,
    port: address.port,
    registry,
    db,
    logger,
    audit,
    gate: gated?.gate,
    policies: gated?.policies,
    async close() {
      clearInterval(purgeTimer);
      clearInterval(checkpointTimer);
      clearInterval(maintenanceTimer);
      gated?.stop();
      const cut = await drain(server, config.http.shutdownGraceSeconds * 1000);
      if (cut > 0) logger.warn({ connections: cut, graceSeconds: config.http.shutdownGraceSeconds }, 'shutdown cut requests still in progress');
      await registry.blobFlushes.drain();
      await files.close();
      await db.close();
    },
  };
}

/**
 * Policies (loaded now; an invalid directory stops start-up), the gate as the registry's
 * admission hook, SIGHUP and file-change reloads, and the expiry sweep.
 */
async function startGate(config: GatewayConfig, registry: Registry, audit: AuditLog, db: Database, logger: Logger) {
  const policies = new PolicySet(config.policy.dir, config.policy.defaultPolicy, logger, async (loaded) => {
    await audit.appendNow({
      action: 'policy.load',
      detail: { dir: config.policy.dir, defaultPolicy: config.policy.defaultPolicy, policies: loaded.map((p) => ({ name: p.policy.name, hash: p.hash, file: p.file })) },
    });
  });
  await policies.load();
  policies.watch();
  const admissions = new AdmissionStore(db);
  const scanner = new TrivyScanner({
    path: config.scanner.trivyPath,
    cacheDir: config.scanner.cacheDir,
    timeoutSeconds: config.scanner.timeoutSeconds,
    server: config.scanner.server,
    token: config.scanner.token,
  });
  const scans = new ScanService({
    registry,
    db,
    scanner,
    workers: config.scanner.workers,
    queueSize: config.scanner.queueSize,
    workDir: path.join(config.storage.root, 'scan'),
    logger,
  });
  const gate = new Gate({
    scans,
    registry,
    admissions,
    audit,
    policyFor: (repository) => policies.resolve(repository),
    evaluate,
    putWaitMs: config.gate.putWaitSeconds * 1000,
    logger,
  });
  registry.setAdmit(gate.admit, gate.admitEarly);
  const onHup = () => void policies.reload();
  process.on('SIGHUP', onHup);
  const expiryTimer = setInterval(() => {
    const now = Date.now();
    gate
      .expire(new Date(now - config.gate.pendingExpirySeconds * 1000), new Date(now - config.gate.deniedExpirySeconds * 1000))
      .catch((err) => logger.error({ err }, 'admission expiry failed'));
  }, config.gate.expiryIntervalSeconds * 1000);
  expiryTimer.unref();
  const rescanTimer =
    config.scanner.rescanIntervalSeconds > 0
      ? setInterval(() => {
          gate.rescan({}).catch((err) => logger.error({ err }, 'scheduled rescan failed'));
        }, config.scanner.rescanIntervalSeconds * 1000)
      : undefined;
  rescanTimer?.unref();
  return {
    gate,
    admissions,
    policies,
    stop() {
      clearInterval(expiryTimer);
      if (rescanTimer) clearInterval(rescanTimer);
      process.off('SIGHUP', onHup);
      policies.close();
    },
  };
}
