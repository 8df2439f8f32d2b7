/**
 * Turns credentials into a caller: Basic (htpasswd users, robots) or Bearer (our tokens),
 * with the lockout applied to every password check. Failures are logged with the
 * request id; nothing here decides HTTP statuses.
 */
import type { Logger } from 'pino';
import { AccessControl, ANONYMOUS, type Action, type Principal } from './access.js';
import type { HtpasswdFile } from './htpasswd.js';
import type { Lockout } from './lockout.js';
import { ROBOT_PREFIX, type Robot, type RobotStore } from './robots.js';
import { grantedActions, TokenError, type AccessClaim, type TokenService } from './tokens.js';

export interface Caller {
  principal: Principal;
  via: 'basic' | 'bearer' | 'anonymous';
  /** With a bearer token, its grants bound what the principal may do. */
  access?: AccessClaim[];
}

export class AuthFailure extends Error {
  constructor(
    message: string,
    readonly kind: 'credentials' | 'token' | 'locked',
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

const ROBOT_CACHE_MS = 10_000;

export interface SecurityEvent {
  action: 'auth.failure' | 'auth.lockout';
  principal: string | null;
  source: string | null;
  reason: string;
  requestId: string | null;
}

export class Authenticator {
  private readonly robotCache = new Map<string, { robot: Robot | null; until: number }>();

  constructor(
    private readonly deps: {
      htpasswd: HtpasswdFile;
      robots: RobotStore;
      tokens: TokenService;
      access: AccessControl;
      lockout: Lockout;
      logger: Logger;
      /** Records failures and lockouts (the audit trail); awaited before the client is answered. */
      onSecurityEvent?: (event: SecurityEvent) => Promise<void>;
    },
  ) {}

  private async report(log: Logger, event: Omit<SecurityEvent, 'requestId'>): Promise<void> {
    if (!this.deps.onSecurityEvent) return;
    const requestId = (log.bindings().reqId as string | undefined) ?? null;
    await this.deps.onSecurityEvent({ ...event, requestId });
  }

  get access(): AccessControl {
    return this.deps.access;
  }

  get tokens(): TokenService {
    return this.deps.tokens;
  }

  async authenticate(authorization: string | undefined, ip: string, log: Logger): Promise<Caller> {
    if (!authorization) return { principal: ANONYMOUS, via: 'anonymous' };
    // "Basic" alone (no space, no credentials) is the scheme with an empty value.
    const space = authorization.indexOf(' ');
    const scheme = (space < 0 ? authorization : authorization.slice(0, space)).toLowerCase();
    const value = space < 0 ? '' : authorization.slice(space + 1).trim();
    if (scheme === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new AuthFailure('malformed Basic credentials', 'credentials');
      return { principal: await this.checkPassword(decoded.slice(0, colon), decoded.slice(colon + 1), ip, log), via: 'basic' };
    }
    if (scheme === 'bearer') return this.checkToken(value, log);
    throw new AuthFailure(`unsupported authorization scheme ${scheme.slice(0, 20)}`, 'credentials');
  }

  /** Verifies a user or robot password under the lockout; throws AuthFailure. */
  async checkPassword(username: string, password: string, ip: string, log: Logger): Promise<Principal> {
    const keys = [`principal:${username}`, `ip:${ip}`];
    const state = this.deps.lockout.state(keys);
    if (state.locked) {
      log.warn({ event: 'auth.locked', principal: username, ip }, 'authentication refused: locked out');
      throw new AuthFailure(`too many failed logins; try again in ${state.retryAfterSeconds}s`, 'locked', state.retryAfterSeconds);
    }
    const result = await this.verifyPassword(username, password);
    if (result.ok) {
      this.deps.lockout.succeed(`principal:${username}`);
      return result.principal;
    }
    const locked = this.deps.lockout.fail(keys);
    log.warn({ event: 'auth.failure', principal: username, ip, reason: result.reason }, 'authentication failed');
    await this.report(log, { action: 'auth.failure', principal: username, source: ip, reason: result.reason });
    if (locked.length > 0) {
      log.warn({ event: 'auth.lockout', keys: locked, principal: username, ip }, 'locked out after repeated failures');
      await this.report(log, { action: 'auth.lockout', principal: username, source: ip, reason: `locked: ${locked.join(', ')}` });
    }
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    throw new AuthFailure('invalid username or password', 'credentials');
  }

  private async verifyPassword(username: string, password: string): Promise<{ ok: true; principal: Principal } | { ok: false; reason: string }> {
    if (username.startsWith(ROBOT_PREFIX)) {
      const name = username.slice(ROBOT_PREFIX.length);
      const check = await this.deps.robots.verify(name, password);
      if (!check.ok) return { ok: false, reason: `robot ${check.reason}` };
      return { ok: true, principal: robotPrincipal(check.robot) };
    }
    if (await this.deps.htpasswd.verify(username, password)) return { ok: true, principal: { kind: 'user', name: username } };
    return { ok: false, reason: this.deps.htpasswd.has(username) ? 'wrong password' : 'unknown user' };
  }

  private async checkToken(token: string, log: Logger): Promise<Caller> {
    let claims;
    try {
      claims = await this.deps.tokens.verify(token);
    } catch (err) {
      log.warn({ event: 'auth.failure', reason: (err as TokenError).message }, 'bearer token refused');
      await this.report(log, { action: 'auth.failure', principal: null, source: null, reason: `bearer token refused: ${(err as Error).message}` });
      throw new AuthFailure((err as Error).message, 'token');
    }
    const principal = await this.principalOf(claims.subject);
    if (!principal) {
      log.warn({ event: 'auth.failure', principal: claims.subject, reason: 'principal no longer exists or expired' }, 'bearer token refused');
      throw new AuthFailure('the token names a principal that no longer exists or has expired', 'token');
    }
    return { principal, via: 'bearer', access: claims.access };
  }

  /** Re-resolves a token's subject, so a removed or expired robot loses access within seconds. */
  private async principalOf(subject: string): Promise<Principal | null> {
    if (subject === '') return ANONYMOUS;
    if (!subject.startsWith(ROBOT_PREFIX)) return { kind: 'user', name: subject };
    const name = subject.slice(ROBOT_PREFIX.length);
    const cached = this.robotCache.get(name);
    let robot: Robot | null;
    if (cached && cached.until > Date.now()) robot = cached.robot;
    else {
      robot = await this.deps.robots.get(name);
      this.robotCache.set(name, { robot, until: Date.now() + ROBOT_CACHE_MS });
    }
    if (!robot || (robot.expiresAt && robot.expiresAt <= new Date())) return null;
    return robotPrincipal(robot);
  }

  /** What the caller may do on a repository: the principal's rights, bounded by its token's grants. */
  rights(caller: Caller, repository: string): Set<Action> {
    const allowed = this.deps.access.actions(caller.principal, repository);
    if (!caller.access) return allowed;
    const granted = grantedActions(caller.access, repository);
    return new Set([...allowed].filter((a) => granted.has(a) || (a === 'pull' && granted.has('push'))));
  }
}

export function robotPrincipal(robot: Robot): Principal {
  return { kind: 'robot', name: robot.name, robotScope: { repositories: robot.repositories, actions: robot.actions } };
}

/** The username a principal logs in with (and the token subject). */
export function usernameOf(principal: Principal): string {
  if (principal.kind === 'robot') return ROBOT_PREFIX + principal.name;
  return principal.name;
}
