/** Starts a real gateway in-process for tests, on a free loopback port, with throwaway storage. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { DEFAULT_CONFIG, type GatewayConfig } from '../../src/config/config.js';
import { startGateway, type RunningGateway, type StartOptions } from '../../src/server.js';
import { createTestDatabase } from './postgres.js';

export const SHIPPED_POLICIES = fileURLToPath(new URL('../../policies', import.meta.url));

export type DatabaseKind = 'pglite' | 'postgres';
export const DATABASE_KINDS: DatabaseKind[] = ['pglite', 'postgres'];

export interface TestGateway extends RunningGateway {
  root: string;
  /** host:port, as clients such as skopeo name the registry. */
  host: string;
  stop(): Promise<void>;
}

export async function startTestGateway(
  database: DatabaseKind,
  overrides: { config?: (c: GatewayConfig) => void; options?: StartOptions } = {},
): Promise<TestGateway> {
  const root = mkdtempSync(path.join(tmpdir(), 'gateway-test-'));
  const config: GatewayConfig = structuredClone(DEFAULT_CONFIG);
  config.http.addr = '127.0.0.1:0';
  config.storage.root = root;
  // The policies the project ships (the warn-mode default): every test push goes through the gate.
  config.policy.dir = SHIPPED_POLICIES;
  config.database.url = database === 'postgres' ? await createTestDatabase() : '';
  // Registry-semantics tests run without authentication; auth tests turn it on.
  config.auth.enabled = false;
  overrides.config?.(config);
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const gateway = await startGateway(config, { logger, defaultMetrics: false, ...overrides.options });
  return {
    ...gateway,
    root,
    host: gateway.url.replace(/^http:\/\//, ''),
    async stop() {
      try {
        await gateway.close();
      } finally {
        // Also after a close that fails (a test that closed the gateway itself, as the shutdown tests do).
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}
