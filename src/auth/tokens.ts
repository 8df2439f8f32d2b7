/**
 * Docker token service tokens: short-lived ES256 JWTs in the shape distribution uses
 * (`iss`, `sub`, `aud` = service, `exp`, `nbf`, `iat`, `jti`, and `access` claims).
 * The signing key is read from a PEM file, or generated there on first start, so that
 * replicas sharing the file accept each other's tokens.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, jwtVerify, SignJWT } from 'jose';
import type { Action } from '../config/config.js';

export interface AccessClaim {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenClaims {
  subject: string;
  access: AccessClaim[];
  expiresAt: Date;
}

export class TokenError extends Error {}

export function loadOrCreateSigningKey(file: string, what = 'token signing key'): KeyObject {
  try {
    return createPrivateKey(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read ${what} ${file}: ${(err as Error).message}`);
    }
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  return privateKey;
}

export class TokenService {
  private readonly publicKey: KeyObject;
  private kid: string | undefined;

  constructor(
    private readonly privateKey: KeyObject,
    readonly options: { issuer: string; service: string; ttlSeconds: number },
  ) {
    if (privateKey.asymmetricKeyType !== 'ec') throw new Error('the token signing key must be an EC P-256 key');
    this.publicKey = createPublicKey(privateKey);
  }

  private async keyId(): Promise<string> {
    this.kid ??= await calculateJwkThumbprint(await exportJWK(this.publicKey));
    return this.kid;
  }

  async issue(subject: string, access: AccessClaim[], now = new Date()): Promise<{ token: string; expiresIn: number; issuedAt: string }> {
    const iat = Math.floor(now.getTime() / 1000);
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: await this.keyId() })
      .setIssuer(this.options.issuer)
      .setSubject(subject)
      .setAudience(this.options.service)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + this.options.ttlSeconds)
      .setJti(randomUUID())
      .sign(this.privateKey);
    return { token, expiresIn: this.options.ttlSeconds, issuedAt: now.toISOString() };
  }

  async verify(token: string): Promise<TokenClaims> {
    try {
      const { payload } = await jwtVerify(token, this.publicKey, {
        issuer: this.options.issuer,
        audience: this.options.service,
        algorithms: ['ES256'],
        clockTolerance: 30,
      });
      const access = Array.isArray(payload.access) ? (payload.access as AccessClaim[]) : [];
      return { subject: payload.sub ?? '', access, expiresAt: new Date((payload.exp ?? 0) * 1000) };
    } catch (err) {
      throw new TokenError(`invalid token: ${(err as Error).message}`);
    }
  }
}

/** Actions a token grants on a repository. */
export function grantedActions(access: AccessClaim[], repository: string): Set<Action> {
  const out = new Set<Action>();
  for (const claim of access) {
    if (claim.type !== 'repository' || claim.name !== repository) continue;
    for (const action of claim.actions) {
      if (action === '*') ['pull', 'push', 'delete'].forEach((a) => out.add(a as Action));
      else if (action === 'pull' || action === 'push' || action === 'delete') out.add(action);
    }
  }
  return out;
}

export interface RequestedScope {
  type: string;
  name: string;
  actions: string[];
}

/**
 * Parses scopes (`repository:name:pull,push`, `registry:catalog:*`). The name may hold a
 * `host:port/` prefix, so the type ends at the first colon and the actions start after the last.
 */
export function parseScopes(values: string[]): RequestedScope[] {
  const scopes: RequestedScope[] = [];
  for (const value of values) {
    for (const item of value.split(' ').filter((s) => s.length > 0)) {
      const first = item.indexOf(':');
      const last = item.lastIndexOf(':');
      if (first <= 0 || last === first) continue;
      const type = item.slice(0, first).replace(/\(.*\)$/, '');
      scopes.push({ type, name: item.slice(first + 1, last), actions: item.slice(last + 1).split(',').filter((a) => a.length > 0) });
    }
  }
  return scopes;
}
