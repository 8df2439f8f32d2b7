/**
 * Authentication and authorisation at the HTTP edge: the challenge (Bearer, as the Docker
 * token spec describes), the token endpoint, and the per-repository check every
 * distribution route makes before it runs.
 */
import express, { type Request, type Response, type Router } from 'express';
import type { Logger } from 'pino';
import { AuthFailure, usernameOf, type Authenticator, type Caller } from '../auth/authenticator.js';
import { ANONYMOUS, type Action } from '../auth/access.js';
import { parseScopes, type AccessClaim } from '../auth/tokens.js';
import { RegistryError } from '../registry/errors.js';
import { isValidName } from '../registry/names.js';
import type { RepositoryView } from '../registry/registry.js';

export interface Guard {
  /** Authenticates the request once (cached on the response). */
  caller(req: Request, res: Response): Promise<Caller>;
  /**
   * Requires `needed` on the repository; returns what the caller may see there. `alsoScope` is
   * added to the challenge of a refusal (the source of a mount), so that the client's next token
   * covers the whole request.
   */
  require(req: Request, res: Response, repository: string, needed: Action[], alsoScope?: string): Promise<RepositoryView>;
  /** The caller's rights on another repository (mount sources), without failing. */
  rightsOn(req: Request, res: Response, repository: string): Promise<Set<Action>>;
  /**
   * The caller's rights on the source of a mount into `target`. A token that lacks pull on the
   * source while its principal has it fails with 401 and a challenge naming both scopes (as
   * Distribution does), so that the client fetches a token for both and mounts; a principal
   * without pull there gets the rights it has (the mount falls back to an upload).
   */
  mountSourceRights(req: Request, res: Response, target: string, source: string): Promise<Set<Action>>;
  /** Requires an authenticated caller, or an anonymous one where anonymous pulls exist. */
  requireLogin(req: Request, res: Response): Promise<Caller>;
  /** Whether a repository appears in the catalog for this caller. */
  catalogFilter(req: Request, res: Response): Promise<(name: string, committed: boolean) => boolean>;
  /** Requires a gateway administrator (auth.admins). */
  requireAdmin(req: Request, res: Response): Promise<Caller>;
}

/** No authentication at all (auth.enabled=false): everyone may do everything. */
export const OPEN_GUARD: Guard = {
  caller: async () => ({ principal: ANONYMOUS, via: 'anonymous' }),
  require: async () => ({ seesStaged: true }),
  rightsOn: async () => new Set<Action>(['pull', 'push', 'delete']),
  mountSourceRights: async () => new Set<Action>(['pull', 'push', 'delete']),
  requireLogin: async () => ({ principal: ANONYMOUS, via: 'anonymous' }),
  catalogFilter: async () => () => true,
  requireAdmin: async () => ({ principal: ANONYMOUS, via: 'anonymous' }),
};

export interface AuthHttpOptions {
  realm: string;
  service: string;
  anonymousAllowed: boolean;
}

const PUSH: Action[] = ['push'];

/** The scope a mount from `source` needs there, beside push on its target. */
export function mountSourceScope(source: string): string {
  return challengeScope(source, ['pull']);
}

function challengeScope(repository: string, needed: Action[]): string {
  const actions = needed.includes('push') ? ['pull', 'push'] : needed;
  return `repository:${repository}:${actions.join(',')}`;
}

export class HttpAuth implements Guard {
  constructor(
    private readonly auth: Authenticator,
    private readonly options: AuthHttpOptions,
  ) {}

  realm(req: Request): string {
    return this.options.realm || `${req.protocol}://${req.host ?? 'localhost'}/auth/token`;
  }

  challenge(req: Request, scope?: string, error?: 'invalid_token' | 'insufficient_scope'): string {
    let header = `Bearer realm=${JSON.stringify(this.realm(req))},service=${JSON.stringify(this.options.service)}`;
    if (scope) header += `,scope=${JSON.stringify(scope)}`;
    if (error) header += `,error=${JSON.stringify(error)}`;
    return header;
  }

  private unauthorized(req: Request, message: string, scope?: string, error?: 'invalid_token' | 'insufficient_scope'): RegistryError {
    return new RegistryError('UNAUTHORIZED', message, { headers: { 'WWW-Authenticate': this.challenge(req, scope, error) } });
  }

  async caller(req: Request, res: Response): Promise<Caller> {
    if (res.locals.caller) return res.locals.caller as Caller;
    const log = res.locals.log as Logger;
    try {
      const caller = await this.auth.authenticate(req.headers.authorization, req.ip ?? '', log);
      res.locals.caller = caller;
      return caller;
    } catch (err) {
      if (!(err instanceof AuthFailure)) throw err;
      if (err.kind === 'locked') {
        throw new RegistryError('TOOMANYREQUESTS', err.message, { headers: { 'Retry-After': String(err.retryAfterSeconds ?? 60) } });
      }
      throw this.unauthorized(req, err.message, undefined, err.kind === 'token' ? 'invalid_token' : undefined);
    }
  }

  async requireLogin(req: Request, res: Response): Promise<Caller> {
    const caller = await this.caller(req, res);
    if (caller.principal.kind === 'anonymous' && caller.via === 'anonymous') {
      throw this.unauthorized(req, 'authentication required');
    }
    return caller;
  }

  async rightsOn(req: Request, res: Response, repository: string): Promise<Set<Action>> {
    const caller = await this.caller(req, res);
    const rights = this.auth.rights(caller, repository);
    // As in require(): staged content of the source follows the principal's push right.
    if (rights.has('pull') && this.auth.access.actions(caller.principal, repository).has('push')) rights.add('push');
    return rights;
  }

  async mountSourceRights(req: Request, res: Response, target: string, source: string): Promise<Set<Action>> {
    const rights = await this.rightsOn(req, res, source);
    const caller = await this.caller(req, res);
    if (!rights.has('pull') && caller.via === 'bearer' && this.auth.access.actions(caller.principal, source).has('pull')) {
      const scope = `${challengeScope(target, PUSH)} ${mountSourceScope(source)}`;
      throw this.unauthorized(req, `token does not grant pull on ${source}, the source of the mount`, scope, 'insufficient_scope');
    }
    return rights;
  }

  async require(req: Request, res: Response, repository: string, needed: Action[], alsoScope?: string): Promise<RepositoryView> {
    const caller = await this.caller(req, res);
    const rights = this.auth.rights(caller, repository);
    const scope = alsoScope ? `${challengeScope(repository, needed)} ${alsoScope}` : challengeScope(repository, needed);
    const principalRights = this.auth.access.actions(caller.principal, repository);
    // Quarantine visibility follows the principal's push right, not the token's scope: a pusher
    // reading back its own image asks for a pull token.
    if (needed.every((a) => rights.has(a))) return { seesStaged: principalRights.has('push') };
    if (caller.via === 'anonymous') throw this.unauthorized(req, 'authentication required', scope);
    // A token that lacks the scope while the principal has it: the client should fetch a new token.
    if (caller.via === 'bearer' && needed.every((a) => principalRights.has(a))) {
      throw this.unauthorized(req, `token does not grant ${needed.join(',')} on ${repository}`, scope, 'insufficient_scope');
    }
    if (caller.via === 'bearer' && caller.principal.kind === 'anonymous') {
      throw this.unauthorized(req, 'authentication required', scope, 'insufficient_scope');
    }
    throw new RegistryError('DENIED', `${usernameOf(caller.principal) || 'anonymous'} may not ${needed.join(',')} ${repository}`, {
      detail: { repository, needed, granted: [...rights] },
    });
  }

  async catalogFilter(req: Request, res: Response) {
    const caller = await this.requireLogin(req, res).catch(async (err) => {
      if (this.options.anonymousAllowed) return this.caller(req, res);
      throw err;
    });
    return (name: string, committed: boolean) => {
      const rights = this.auth.access.actions(caller.principal, name);
      return rights.has('pull') && (committed || rights.has('push'));
    };
  }

  async requireAdmin(req: Request, res: Response): Promise<Caller> {
    const caller = await this.requireLogin(req, res);
    if (!this.auth.access.isAdmin(caller.principal)) {
      throw new RegistryError('DENIED', `${usernameOf(caller.principal)} is not a gateway administrator`);
    }
    return caller;
  }

  /** `/auth/token`: GET (Docker token spec) and POST (OAuth2 password grant). Refresh tokens are not issued. */
  tokenRouter(): Router {
    const router = express.Router();
    router.get('/', async (req, res) => {
      res.locals.route = 'token';
      const caller = await this.tokenCaller(req, res, req.headers.authorization);
      await this.sendToken(req, res, caller, listOf(req.query.scope));
    });
    router.post('/', express.urlencoded({ extended: false, limit: '16kb' }), async (req, res) => {
      res.locals.route = 'token';
      const body = (req.body ?? {}) as Record<string, unknown>;
      const grant = typeof body.grant_type === 'string' ? body.grant_type : '';
      if (grant !== 'password') {
        res.status(400).json({ error: 'unsupported_grant_type', error_description: 'only grant_type=password is supported; refresh tokens are not issued' });
        return;
      }
      const username = typeof body.username === 'string' ? body.username : '';
      const password = typeof body.password === 'string' ? body.password : '';
      let caller: Caller;
      try {
        caller = { principal: await this.auth.checkPassword(username, password, req.ip ?? '', res.locals.log), via: 'basic' };
      } catch (err) {
        return this.tokenFailure(req, res, err);
      }
      await this.sendToken(req, res, caller, listOf(body.scope));
    });
    return router;
  }

  private async tokenCaller(req: Request, res: Response, authorization: string | undefined): Promise<Caller | null> {
    try {
      if (authorization && !authorization.toLowerCase().startsWith('basic ')) {
        throw new AuthFailure('the token endpoint takes Basic credentials', 'credentials');
      }
      return await this.auth.authenticate(authorization, req.ip ?? '', res.locals.log);
    } catch (err) {
      this.tokenFailure(req, res, err);
      return null;
    }
  }

  private tokenFailure(req: Request, res: Response, err: unknown): void {
    if (!(err instanceof AuthFailure)) throw err;
    if (err.kind === 'locked') {
      res.setHeader('Retry-After', String(err.retryAfterSeconds ?? 60));
      res.status(429).json({ errors: [{ code: 'TOOMANYREQUESTS', message: err.message }] });
      return;
    }
    res.setHeader('WWW-Authenticate', `Basic realm=${JSON.stringify(this.realm(req))}`);
    res.status(401).json({ errors: [{ code: 'UNAUTHORIZED', message: err.message }] });
  }

  private async sendToken(req: Request, res: Response, caller: Caller | null, scopes: string[]): Promise<void> {
    if (!caller) return;
    const service = typeof req.query.service === 'string' ? req.query.service : (req.body as Record<string, unknown> | undefined)?.service;
    if (service !== undefined && service !== this.options.service) {
      res.status(400).json({ errors: [{ code: 'DENIED', message: `this token service serves ${this.options.service}, not ${String(service)}` }] });
      return;
    }
    const access: AccessClaim[] = [];
    for (const scope of parseScopes(scopes)) {
      if (scope.type !== 'repository' || !isValidName(scope.name)) continue;
      const rights = this.auth.rights(caller, scope.name);
      const wanted = scope.actions.includes('*') ? ['pull', 'push', 'delete'] : scope.actions;
      const actions = wanted.filter((a): a is Action => (a === 'pull' || a === 'push' || a === 'delete') && rights.has(a));
      if (actions.length > 0) access.push({ type: 'repository', name: scope.name, actions });
    }
    const issued = await this.auth.tokens.issue(usernameOf(caller.principal), access);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt });
  }
}

function listOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}
