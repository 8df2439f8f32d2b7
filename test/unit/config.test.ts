import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, envName, loadConfig } from '../../src/config/config.js';

describe('configuration', () => {
  // The config files the tests write, removed after them.
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('has working defaults', () => {
    const config = loadConfig({ env: {} });
    expect(config.http.addr).to.equal('0.0.0.0:5000');
    expect(config.storage.root).to.equal(path.resolve('./data'));
    expect(config.database.url).to.equal('');
    expect(config.policy.dir).to.equal(path.resolve('./policies'));
    expect(config.limits.maxManifestBytes).to.equal(4 * 1024 * 1024);
  });

  it('derives environment names from keys', () => {
    expect(envName('http', 'addr')).to.equal('GATEWAY_HTTP_ADDR');
    expect(envName('limits', 'maxManifestBytes')).to.equal('GATEWAY_LIMITS_MAX_MANIFEST_BYTES');
  });

  it('layers file, then environment', () => {
    const file = path.join(dir, 'gateway.yaml');
    writeFileSync(file, 'http:\n  addr: 127.0.0.1:6000\nlimits:\n  maxPageSize: 50\n');
    const config = loadConfig({ file, env: { GATEWAY_LIMITS_MAX_PAGE_SIZE: '70', GATEWAY_DATABASE_URL: 'postgres://u@h/db' } });
    expect(config.http.addr).to.equal('127.0.0.1:6000');
    expect(config.limits.maxPageSize).to.equal(70);
    expect(config.database.url).to.equal('postgres://u@h/db');
  });

  it('stops with a message naming the key', () => {
    expect(() => loadConfig({ env: { GATEWAY_LIMITS_MAX_MANIFEST_BYTES: 'lots' } })).to.throw(ConfigError, /GATEWAY_LIMITS_MAX_MANIFEST_BYTES/);
    expect(() => loadConfig({ env: { GATEWAY_HTTP_ADDR: 'nope' } })).to.throw(ConfigError, /http\.addr/);
    expect(() => loadConfig({ env: { GATEWAY_DATABASE_URL: 'mysql://x' } })).to.throw(ConfigError, /database\.url/);
    const file = path.join(dir, 'gateway.json');
    writeFileSync(file, JSON.stringify({ storage: { rot: '/x' } }));
    expect(() => loadConfig({ file, env: {} })).to.throw(ConfigError, /unknown key storage\.rot/);
    expect(() => loadConfig({ env: { GATEWAY_HTTP_ADDR: '127.0.0.1:65536' } })).to.throw(ConfigError, /http\.addr .*port 65536, above 65535/);
  });

  it('stops at an unknown variable of a known section, naming the setting it resembles', () => {
    expect(() => loadConfig({ env: { GATEWAY_AUTH_ENABLE: 'false' } })).to.throw(
      ConfigError,
      /unknown environment variable GATEWAY_AUTH_ENABLE \(did you mean GATEWAY_AUTH_ENABLED\?\)/,
    );
    expect(() => loadConfig({ env: { GATEWAY_STORAGE_SOMETHING_ELSE: 'x' } })).to.throw(ConfigError, /GATEWAY_STORAGE_SOMETHING_ELSE;/);
  });

  it('leaves alone other GATEWAY_ variables and those Kubernetes sets for Services', () => {
    const env = {
      GATEWAY_USERNAME: 'ci',
      GATEWAY_FAILPOINTS: '',
      GATEWAY_PORT: 'tcp://10.0.0.1:5000',
      GATEWAY_DATABASE_SERVICE_HOST: '10.0.0.2',
      GATEWAY_DATABASE_SERVICE_PORT: '5432',
      GATEWAY_DATABASE_SERVICE_PORT_POSTGRES: '5432',
      GATEWAY_DATABASE_PORT: 'tcp://10.0.0.2:5432',
      GATEWAY_DATABASE_PORT_5432_TCP: 'tcp://10.0.0.2:5432',
      GATEWAY_DATABASE_PORT_5432_TCP_ADDR: '10.0.0.2',
      GATEWAY_DATABASE_PORT_5432_TCP_PORT: '5432',
      GATEWAY_DATABASE_PORT_5432_TCP_PROTO: 'tcp',
    };
    expect(loadConfig({ env }).database.url).to.equal('');
  });
});

describe('README configuration reference', () => {
  it('documents every configuration key and environment variable with its default', async () => {
    const { readFileSync } = await import('node:fs');
    const { environmentKeys, DEFAULT_CONFIG } = await import('../../src/config/config.js');
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const { env, key } of environmentKeys()) {
      const [section, name] = key.split('.');
      const value = (DEFAULT_CONFIG as unknown as Record<string, Record<string, unknown>>)[section][name];
      const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
      const shown = value === '' ? '*(unset)*' : `\`${text}\``;
      expect(readme, key).to.include(`| \`${key}\` | \`${env}\` | ${shown} |`);
    }
  });
});
