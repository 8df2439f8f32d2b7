/**
 * Configuration: defaults, then a YAML/JSON file, then GATEWAY_* environment variables.
 * Every leaf key `section.someKey` can be set as GATEWAY_SECTION_SOME_KEY. The result is
 * validated once with ajv; an invalid value stops start-up with a message naming the key.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import YAML from 'yaml';

export interface GatewayConfig {
  http: {
    addr: string;
    /** Idle socket timeout: a request that sends or receives nothing for this long is cut. */
    idleTimeoutSeconds: number;
    headersTimeoutSeconds: number;
  };
  storage: { root: string; deleteEnabled: boolean };
  database: { url: string; poolSize: number };
  policy: { dir: string };
  limits: { maxManifestBytes: number; maxBlobBytes: number; maxPageSize: number };
  uploads: { purgeAfterSeconds: number; purgeIntervalSeconds: number };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
}

export const DEFAULT_CONFIG: GatewayConfig = {
  http: { addr: '0.0.0.0:5000', idleTimeoutSeconds: 120, headersTimeoutSeconds: 60 },
  storage: { root: './data', deleteEnabled: true },
  database: { url: '', poolSize: 20 },
  policy: { dir: './policies' },
  limits: { maxManifestBytes: 4 * 1024 * 1024, maxBlobBytes: 0, maxPageSize: 10000 },
  uploads: { purgeAfterSeconds: 24 * 3600, purgeIntervalSeconds: 600 },
  log: { level: 'info' },
};

const positiveInt = { type: 'integer', minimum: 1 } as const;
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
      },
    },
    storage: {
      type: 'object',
      additionalProperties: false,
      properties: { root: { type: 'string', minLength: 1 }, deleteEnabled: { type: 'boolean' } },
    },
    database: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: 'string', pattern: '^$|^postgres(ql)?://' },
        poolSize: positiveInt,
      },
    },
    policy: { type: 'object', additionalProperties: false, properties: { dir: { type: 'string', minLength: 1 } } },
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
  validateOrThrow(merged, 'configuration');
  const config = merged as unknown as GatewayConfig;
  config.storage.root = path.resolve(config.storage.root);
  config.policy.dir = path.resolve(config.policy.dir);
  return config;
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
