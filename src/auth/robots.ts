/**
 * Robot accounts: CI identities with a long random secret (shown once, stored as SHA-256;
 * a 256-bit random secret needs no slow hash), scoped to repository globs and actions,
 * optionally expiring. Clients log in as `robot$<name>` with the secret as password.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Database, Queryable } from '../db/database.js';
import type { Action } from '../config/config.js';
import type { AuditLog } from '../audit/log.js';

export const ROBOT_PREFIX = 'robot$';
const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface Robot {
  name: string;
  username: string;
  repositories: string[];
  actions: Action[];
  description: string;
  createdAt: Date;
  rotatedAt: Date;
  expiresAt: Date | null;
}

export interface NewRobot {
  name: string;
  repositories: string[];
  actions: Action[];
  description?: string;
  expiresAt?: Date | null;
}

interface RobotRow {
  name: string;
  secret_sha256: string;
  repositories: string[];
  actions: Action[];
  description: string;
  created_at: Date;
  rotated_at: Date;
  expires_at: Date | null;
}

export class RobotError extends Error {
  constructor(
    readonly code: 'invalid' | 'exists' | 'unknown',
    message: string,
  ) {
    super(message);
  }
}

function toRobot(row: RobotRow): Robot {
  return {
    name: row.name,
    username: ROBOT_PREFIX + row.name,
    repositories: row.repositories,
    actions: row.actions,
    description: row.description,
    createdAt: row.created_at,
    rotatedAt: row.rotated_at,
    expiresAt: row.expires_at,
  };
}

function newSecret(): { secret: string; sha256: string } {
  const secret = randomBytes(32).toString('base64url');
  return { secret, sha256: createHash('sha256').update(secret).digest('hex') };
}

/** Who changes a robot: recorded with the change, in its transaction. */
export interface RobotActor {
  principal: string;
  requestId?: string | null;
}

export type RobotCheck = { ok: true; robot: Robot } | { ok: false; reason: 'unknown' | 'expired' | 'wrong secret' };

export class RobotStore {
  constructor(
    private readonly db: Database,
    private readonly audit: AuditLog,
  ) {}

  /** A change and its audit record, in one transaction: a change that cannot be recorded does not happen. */
  private change<T>(action: 'robot.create' | 'robot.rotate' | 'robot.delete', robot: string, actor: RobotActor, fn: (q: Queryable) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) => {
      const value = await fn(tx);
      await this.audit.append(tx, { action, principal: actor.principal, requestId: actor.requestId ?? null, detail: { robot } });
      return value;
    });
  }

  async create(input: NewRobot, actor: RobotActor): Promise<{ robot: Robot; secret: string }> {
    if (!NAME_RE.test(input.name)) throw new RobotError('invalid', `invalid robot name ${JSON.stringify(input.name)}: lowercase letters, digits and . _ - only`);
    if (input.repositories.length === 0) throw new RobotError('invalid', 'a robot needs at least one repository pattern');
    if (input.actions.length === 0) throw new RobotError('invalid', 'a robot needs at least one action');
    const { secret, sha256 } = newSecret();
    return this.change('robot.create', input.name, actor, async (q) => {
      const rows = await q.query<RobotRow>(
        `INSERT INTO robots (name, secret_sha256, repositories, actions, description, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING *`,
        [input.name, sha256, JSON.stringify(input.repositories), JSON.stringify(input.actions), input.description ?? '', input.expiresAt ?? null],
      );
      if (rows.length === 0) throw new RobotError('exists', `robot ${input.name} already exists; rotate its secret instead`);
      return { robot: toRobot(rows[0]), secret };
    });
  }

  async list(): Promise<Robot[]> {
    return (await this.db.query<RobotRow>('SELECT * FROM robots ORDER BY name')).map(toRobot);
  }

  async get(name: string): Promise<Robot | null> {
    const rows = await this.db.query<RobotRow>('SELECT * FROM robots WHERE name = $1', [name]);
    return rows.length > 0 ? toRobot(rows[0]) : null;
  }

  /** Replaces the secret (the old one stops working at once); optionally sets a new expiry. */
  async rotate(name: string, actor: RobotActor, expiresAt?: Date | null): Promise<{ robot: Robot; secret: string }> {
    const { secret, sha256 } = newSecret();
    return this.change('robot.rotate', name, actor, async (q) => {
      const rows = await q.query<RobotRow>(
        `UPDATE robots SET secret_sha256 = $2, rotated_at = now(),
                expires_at = CASE WHEN $3::boolean THEN $4::timestamptz ELSE expires_at END
          WHERE name = $1 RETURNING *`,
        [name, sha256, expiresAt !== undefined, expiresAt ?? null],
      );
      if (rows.length === 0) throw new RobotError('unknown', `robot ${name} does not exist`);
      return { robot: toRobot(rows[0]), secret };
    });
  }

  async remove(name: string, actor: RobotActor): Promise<void> {
    await this.change('robot.delete', name, actor, async (q) => {
      const rows = await q.query('DELETE FROM robots WHERE name = $1 RETURNING name', [name]);
      if (rows.length === 0) throw new RobotError('unknown', `robot ${name} does not exist`);
    });
  }

  async verify(name: string, secret: string, now = new Date()): Promise<RobotCheck> {
    // A name no robot can have (one from a login: any text, U+0000 included) is not looked up.
    const rows = NAME_RE.test(name) ? await this.db.query<RobotRow>('SELECT * FROM robots WHERE name = $1', [name]) : [];
    const offered = createHash('sha256').update(secret).digest();
    if (rows.length === 0) return { ok: false, reason: 'unknown' };
    const row = rows[0];
    if (!timingSafeEqual(offered, Buffer.from(row.secret_sha256, 'hex'))) return { ok: false, reason: 'wrong secret' };
    if (row.expires_at && row.expires_at <= now) return { ok: false, reason: 'expired' };
    return { ok: true, robot: toRobot(row) };
  }
}
