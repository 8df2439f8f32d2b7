/**
 * Configuration: defaults, then a YAML/JSON file, then GATEWAY_* environment variables.
 * Every leaf key `section.someKey` can be set as GATEWAY_SECTION_SOME_KEY. The result is
 * validated once with ajv; an invalid value stops start-up with a message naming the key.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import YAML from 'yaml';

export interface GatewayConfig {
  http: {
    addr: string;
    /** Idle socket timeout: a request that sends or receives nothing for this long is cut. */
    idleTimeoutSeconds: number;
    headersTimeoutSeconds: number;
    shutdownGraceSeconds: number;
    /** PEM certificate and key: when both are set the gateway serves HTTPS only (TLS 1.2+). */
    tlsCert: string;
    tlsKey: string;
    /** Addresses or CIDRs of reverse proxies whose X-Forwarded-Proto/-For are believed. */
    trustedProxies: string[];
  };
  auth: AuthConfig;
  storage: {
    root: string;
    deleteEnabled: boolean;
    fsync: boolean;
    /**
     * With fsync on, when a blob's bytes must be on disk: before a manifest that references it is
     * accepted (`manifest`: its 201 comes first, the flush follows in the background), or before
     * its own 201 (`upload`). See src/registry/blob-flushes.ts.
     */
    blobFlush: 'manifest' | 'upload';
    /** Writes are refused (507) rather than leave less than this many bytes free on the storage root's filesystem. */
    reserveBytes: number;
    /** Bytes that uploads wrote last, kept in the page cache for their first reads (src/storage/recent-pages.ts). */
    cacheRecentBytes: number;
  };
  database: { url: string; poolSize: number };
  policy: {
    dir: string;
    /** What applies where no policy's `repositories` match: `deny`, or the name of a loaded policy. */
    defaultPolicy: string;
  };
  gate: GateConfig;
  audit: {
    /** PEM PKCS#8 private key (EC P-256) that signs audit checkpoints; empty = generated under the storage root. */
    checkpointKeyFile: string;
    /** A signed checkpoint is written after this many records (and at least every checkpointIntervalSeconds). */
    checkpointEvery: number;
    checkpointIntervalSeconds: number;
  };
  scanner: ScannerConfig;
  limits: { maxManifestBytes: number; maxBlobBytes: number; maxPageSize: number };
  uploads: { purgeAfterSeconds: number; purgeIntervalSeconds: number };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
}

export interface GateConfig {
  /** false = every push is admitted at once (no policies, no quarantine); for measurements and migrations only. */
  enabled: boolean;
  /** How long a manifest PUT waits for a final verdict before answering 201 + Warning. */
  putWaitSeconds: number;
  /** Content pending longer than this expires (its admission is closed and its staged bytes are garbage). */
  pendingExpirySeconds: number;
  /** Denied content is kept this long for inspection, then expires. */
  deniedExpirySeconds: number;
  expiryIntervalSeconds: number;
}

export interface ScannerConfig {
  /** The trivy executable: a name on PATH or a path. */
  trivyPath: string;
  /** Trivy's cache with the seeded vulnerability database (`db/trivy.db`); empty = Trivy's default (~/.cache/trivy). */
  cacheDir: string;
  workers: number;
  queueSize: number;
  timeoutSeconds: number;
  /** Client mode: URL of a `trivy server`; empty = scan locally. */
  server: string;
  token: string;
  /** Rescan admitted images this often (0 = never); findings are reported, images stay pullable. */
  rescanIntervalSeconds: number;
}

export type Action = 'pull' | 'push' | 'delete' | 'admin';

export interface AccessRule {
  /** `user:NAME`, `group:NAME`, `robot:NAME`, `authenticated` or `anonymous`. */
  subjects: string[];
  /** Repository globs: `team/*` one level, `team/**` any depth. */
  repositories: string[];
  actions: Action[];
}

export interface AuthConfig {
  /** false = no authentication at all (local experiments only; logged as a warning). */
  enabled: boolean;
  htpasswd: string;
  /** Token endpoint URL clients are sent to; empty = derived from the request's own URL. */
  realm: string;
  service: string;
  issuer: string;
  tokenTtlSeconds: number;
  /** PEM (PKCS#8) EC P-256 private key that signs tokens; empty = generated under the storage root. */
  tokenKeyFile: string;
  /** Repository globs anonymous clients may pull; empty = no anonymous access. */
  anonymousPull: string[];
  /** Subjects allowed to administer the gateway (robots, users' view of everything). */
  admins: string[];
  groups: Record<string, string[]>;
  rules: AccessRule[];
  lockoutSlowdownAfter: number;
  lockoutMaxFailures: number;
  lockoutWindowSeconds: number;
  lockoutSeconds: number;
}

export const DEFAULT_CONFIG: GatewayConfig = {
  http: {
    addr: '0.0.0.0:5000',
    idleTimeoutSeconds: 120,
    headersTimeoutSeconds: 60,
    shutdownGraceSeconds: 25,
    tlsCert: '',
    tlsKey: '',
    trustedProxies: [],
  },
  auth: {
    enabled: true,
    htpasswd: '',
    realm: '',
    service: 'oci-gateway',
    issuer: 'oci-gateway',
    tokenTtlSeconds: 300,
    tokenKeyFile: '',
    anonymousPull: [],
    admins: ['user:admin'],
    groups: {},
    rules: [],
    lockoutSlowdownAfter: 3,
    lockoutMaxFailures: 10,
    lockoutWindowSeconds: 300,
    lockoutSeconds: 900,
  },
  storage: { root: './data', deleteEnabled: true, fsync: true, blobFlush: 'manifest', reserveBytes: 256 * 1024 * 1024, cacheRecentBytes: 256 * 1024 * 1024 },
  database: { url: '', poolSize: 20 },
  policy: { dir: './policies', defaultPolicy: 'default' },
  gate: {
    enabled: true,
    putWaitSeconds: 5,
    pendingExpirySeconds: 7 * 24 * 3600,
    deniedExpirySeconds: 7 * 24 * 3600,
    expiryIntervalSeconds: 600,
  },
  audit: { checkpointKeyFile: '', checkpointEvery: 1000, checkpointIntervalSeconds: 3600 },
  scanner: {
    trivyPath: 'trivy',
    cacheDir: '',
    workers: 2,
    queueSize: 100,
    timeoutSeconds: 300,
    server: '',
    token: '',
    rescanIntervalSeconds: 86400,
  },
  limits: { maxManifestBytes: 4 * 1024 * 1024, maxBlobBytes: 0, maxPageSize: 10000 },
  uploads: { purgeAfterSeconds: 24 * 3600, purgeIntervalSeconds: 600 },
  log: { level: 'info' },
};

const positiveInt = { type: 'integer', minimum: 1 } as const;
const SUBJECT_PATTERN = '^((user|group|robot):[^\\s]+|authenticated|anonymous)$';
const schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    http: {
      type: 'object',
      additionalProperties: false,
      properties: {
        addr: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]*):[0-9]{1,5}$' },
        idleTimeoutSeconds: positiveInt,
        headersTimeoutSeconds: positiveInt,
        shutdownGraceSeconds: { type: 'integer', minimum: 0 },
        tlsCert: { type: 'string' },
        tlsKey: { type: 'string' },
        trustedProxies: { type: 'array', items: { type: 'string', minLength: 1 } },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        htpasswd: { type: 'string' },
        realm: { type: 'string', pattern: '^$|^https?://' },
        service: { type: 'string', minLength: 1 },
        issuer: { type: 'string', minLength: 1 },
        tokenTtlSeconds: { type: 'integer', minimum: 60, maximum: 86400 },
        tokenKeyFile: { type: 'string' },
        anonymousPull: { type: 'array', items: { type: 'string', minLength: 1 } },
        admins: { type: 'array', items: { type: 'string', pattern: SUBJECT_PATTERN } },
        groups: {
          type: 'object',
          additionalProperties: { type: 'array', items: { type: 'string', minLength: 1 } },
        },
        rules: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['subjects', 'repositories', 'actions'],
            properties: {
              subjects: { type: 'array', minItems: 1, items: { type: 'string', pattern: SUBJECT_PATTERN } },
              repositories: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
              actions: { type: 'array', minItems: 1, items: { enum: ['pull', 'push', 'delete', 'admin'] } },
            },
          },
        },
        lockoutSlowdownAfter: positiveInt,
        lockoutMaxFailures: positiveInt,
        lockoutWindowSeconds: positiveInt,
        lockoutSeconds: positiveInt,
      },
    },
    storage: {
      type: 'object',
      additionalProperties: false,
      properties: {
        root: { type: 'string', minLength: 1 },
        deleteEnabled: { type: 'boolean' },
        fsync: { type: 'boolean' },
        blobFlush: { enum: ['manifest', 'upload'] },
        reserveBytes: { type: 'integer', minimum: 0 },
        cacheRecentBytes: { type: 'integer', minimum: 0 },
      },
    },
    database: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: 'string', pattern: '^$|^postgres(ql)?://' },
        poolSize: positiveInt,
      },
    },
    policy: {
      type: 'object',
      additionalProperties: false,
      properties: { dir: { type: 'string', minLength: 1 }, defaultPolicy: { type: 'string', minLength: 1 } },
    },
    gate: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        putWaitSeconds: { type: 'integer', minimum: 0, maximum: 300 },
        pendingExpirySeconds: positiveInt,
        deniedExpirySeconds: positiveInt,
        expiryIntervalSeconds: positiveInt,
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      properties: { checkpointKeyFile: { type: 'string' }, checkpointEvery: positiveInt, checkpointIntervalSeconds: positiveInt },
    },
    scanner: {
      type: 'object',
      additionalProperties: false,
      properties: {
        trivyPath: { type: 'string', minLength: 1 },
        cacheDir: { type: 'string' },
        workers: { type: 'integer', minimum: 1, maximum: 64 },
        queueSize: { type: 'integer', minimum: 0 },
        timeoutSeconds: positiveInt,
        server: { type: 'string', pattern: '^$|^https?://' },
        token: { type: 'string' },
        rescanIntervalSeconds: { type: 'integer', minimum: 0 },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxManifestBytes: positiveInt,
        maxBlobBytes: { type: 'integer', minimum: 0 },
        maxPageSize: positiveInt,
      },
    },
    uploads: {
      type: 'object',
      additionalProperties: false,
      properties: { purgeAfterSeconds: positiveInt, purgeIntervalSeconds: positiveInt },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: { level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] } },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true });
const validate = ajv.compile(schema);

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** GATEWAY_SECTION_SOME_KEY for section.someKey. */
export function envName(section: string, key: string): string {
  return `GATEWAY_${section.toUpperCase()}_${key.replace(/([A-Z])/g, '_$1').toUpperCase()}`;
}

/** Every environment variable the gateway reads, with the config key it sets. */
export function environmentKeys(): Array<{ env: string; key: string }> {
  const keys: Array<{ env: string; key: string }> = [];
  for (const [section, values] of Object.entries(DEFAULT_CONFIG)) {
    for (const key of Object.keys(values)) keys.push({ env: envName(section, key), key: `${section}.${key}` });
  }
  return keys;
}

function coerce(raw: string, example: unknown, name: string): unknown {
  if (typeof example === 'number') {
    if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
    return Number(raw);
  }
  if (typeof example === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(raw)) return true;
    if (/^(false|0|no|off)$/i.test(raw)) return false;
    throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
  }
  if (Array.isArray(example) || (typeof example === 'object' && example !== null)) {
    // Lists may be comma-separated; anything structured may be given as JSON.
    if (raw.trim().startsWith('[') || raw.trim().startsWith('{')) {
      try {
        return JSON.parse(raw);
      } catch (err) {
        throw new ConfigError(`${name} is not valid JSON: ${(err as Error).message}`);
      }
    }
    if (Array.isArray(example)) return raw.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
    throw new ConfigError(`${name} must be JSON`);
  }
  return raw;
}

function readFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config file ${file} must hold an object`);
  return parsed as Record<string, unknown>;
}

export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): GatewayConfig {
  const env = options.env ?? process.env;
  const file = options.file ?? env.GATEWAY_CONFIG;
  const fromFile = file ? readFile(file) : {};
  validateOrThrow(fromFile, file ? `config file ${file}` : 'config');

  const merged = structuredClone(DEFAULT_CONFIG) as unknown as Record<string, Record<string, unknown>>;
  for (const [section, values] of Object.entries(fromFile)) Object.assign(merged[section], values);
  for (const [section, values] of Object.entries(DEFAULT_CONFIG)) {
    for (const [key, example] of Object.entries(values)) {
      const name = envName(section, key);
      const raw = env[name];
      if (raw !== undefined) merged[section][key] = coerce(raw, example, name);
    }
  }
  refuseUnknownVariables(env);
  validateOrThrow(merged, 'configuration');
  const config = merged as unknown as GatewayConfig;
  const { port } = parseAddr(config.http.addr);
  if (port > 65535) throw new ConfigError(`invalid configuration: http.addr (GATEWAY_HTTP_ADDR) has port ${port}, above 65535`);
  config.storage.root = path.resolve(config.storage.root);
  config.policy.dir = path.resolve(config.policy.dir);
  config.auth.htpasswd = path.resolve(config.auth.htpasswd || path.join(config.storage.root, 'auth', 'htpasswd'));
  config.scanner.cacheDir = path.resolve(config.scanner.cacheDir || defaultTrivyCache());
  config.audit.checkpointKeyFile = path.resolve(
    config.audit.checkpointKeyFile || path.join(config.storage.root, 'audit', 'checkpoint-key.pem'),
  );
  config.auth.tokenKeyFile = path.resolve(config.auth.tokenKeyFile || path.join(config.storage.root, 'auth', 'token-key.pem'));
  if (Boolean(config.http.tlsCert) !== Boolean(config.http.tlsKey)) {
    throw new ConfigError('invalid configuration: http.tlsCert (GATEWAY_HTTP_TLS_CERT) and http.tlsKey (GATEWAY_HTTP_TLS_KEY) must be set together');
  }
  return config;
}

/**
 * A variable named like a setting of a known section that is no setting (GATEWAY_AUTH_ENABLE
 * for GATEWAY_AUTH_ENABLED) would otherwise be ignored without a word. Other GATEWAY_* names
 * (the CLI's GATEWAY_USERNAME) are left alone, and so are the variables Kubernetes sets for
 * each Service in the namespace: a Service "gateway-database" brings GATEWAY_DATABASE_PORT.
 */
function refuseUnknownVariables(env: NodeJS.ProcessEnv): void {
  const known = environmentKeys().map((k) => k.env);
  const prefixes = Object.keys(DEFAULT_CONFIG).map((section) => `GATEWAY_${section.toUpperCase()}_`);
  const unknown = Object.keys(env).filter(
    (name) => prefixes.some((p) => name.startsWith(p)) && !known.includes(name) && !KUBERNETES_SERVICE_VARIABLE.test(name),
  );
  if (unknown.length === 0) return;
  const described = unknown.map((name) => {
    const near = known.filter((k) => editDistance(k, name) <= 3).sort((a, b) => editDistance(a, name) - editDistance(b, name))[0];
    return near ? `${name} (did you mean ${near}?)` : name;
  });
  throw new ConfigError(`invalid configuration: unknown environment variable ${described.join(', ')}; \`gateway serve --help\` lists them all`);
}

/** {SVCNAME}_SERVICE_HOST, _SERVICE_PORT[_NAME], _PORT and _PORT_{port}_{PROTOCOL}[_PROTO|_PORT|_ADDR]. */
const KUBERNETES_SERVICE_VARIABLE = /_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$/;

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** Trivy's own default cache: os.UserCacheDir()/trivy. */
function defaultTrivyCache(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'trivy');
}

function validateOrThrow(value: unknown, where: string): void {
  if (validate(value)) return;
  const problems = (validate.errors ?? []).map((e) => {
    const key = e.instancePath.slice(1).replace(/\//g, '.');
    if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      return `unknown key ${key ? `${key}.` : ''}${extra}`;
    }
    const envHint = key.includes('.') ? ` (${envName(key.split('.')[0], key.split('.')[1])})` : '';
    return `${key}${envHint} ${e.message ?? 'is invalid'}`;
  });
  throw new ConfigError(`invalid ${where}: ${problems.join('; ')}`);
}

export function parseAddr(addr: string): { host: string; port: number } {
  const index = addr.lastIndexOf(':');
  const host = addr.slice(0, index).replace(/^\[|\]$/g, '') || '0.0.0.0';
  return { host, port: Number(addr.slice(index + 1)) };
}
