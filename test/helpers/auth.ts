/** Gateways with authentication on, users and tokens for tests. */
import path from 'node:path';
import { upsertHtpasswdUser } from '../../src/auth/htpasswd.js';
import type { GatewayConfig } from '../../src/config/config.js';
import type { StartOptions } from '../../src/server.js';
import { startTestGateway, type DatabaseKind, type TestGateway } from './gateway.js';

export const PASSWORDS = { admin: 'admin-password-1', alice: 'alice-password-1', reader: 'reader-password-1', bob: 'bob-password-1' };

/**
 * Users: admin (gateway admin), alice (push/delete on team/**), reader (pull on team/**),
 * bob (push on bob/** only). Anonymous may pull public/**.
 */
export async function startAuthGateway(
  kind: DatabaseKind,
  tweak?: (c: GatewayConfig) => void,
  options?: StartOptions,
): Promise<TestGateway> {
  let htpasswd = '';
  const gw = await startTestGateway(kind, {
    options,
    config: (c) => {
      c.auth.enabled = true;
      htpasswd = path.join(c.storage.root, 'auth', 'htpasswd');
      c.auth.htpasswd = htpasswd;
      c.auth.tokenKeyFile = path.join(c.storage.root, 'auth', 'token-key.pem');
      c.auth.anonymousPull = ['public/**'];
      c.auth.groups = { readers: ['reader'] };
      c.auth.rules = [
        { subjects: ['user:alice'], repositories: ['team/**', 'public/**'], actions: ['push', 'delete'] },
        { subjects: ['group:readers'], repositories: ['team/**'], actions: ['pull'] },
        { subjects: ['user:bob'], repositories: ['bob/**'], actions: ['push'] },
      ];
      c.auth.lockoutSlowdownAfter = 100;
      c.auth.lockoutMaxFailures = 100;
      tweak?.(c);
    },
  });
  for (const [name, password] of Object.entries(PASSWORDS)) await upsertHtpasswdUser(htpasswd, name, password);
  return gw;
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export function userAuth(user: keyof typeof PASSWORDS): string {
  return basic(user, PASSWORDS[user]);
}

export async function fetchToken(base: string, authorization: string | null, scopes: string[]): Promise<{ status: number; token?: string; body: Record<string, unknown> }> {
  const query = new URLSearchParams({ service: 'oci-gateway' });
  for (const s of scopes) query.append('scope', s);
  const res = await fetch(`${base}/auth/token?${query}`, { headers: authorization ? { Authorization: authorization } : {} });
  const body = (await res.json()) as Record<string, unknown>;
  return { status: res.status, token: body.token as string | undefined, body };
}

export function decodeJwt(token: string): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString()),
  };
}
