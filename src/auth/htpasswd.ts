/**
 * htpasswd users, bcrypt only. The file is re-read when it changes. Successful checks are
 * remembered briefly so that clients sending Basic on every request do not pay bcrypt
 * each time; failures are never cached.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import type { Logger } from 'pino';

const BCRYPT_RE = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;
const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const VERIFIED_TTL_MS = 5 * 60 * 1000;
export const BCRYPT_COST = 10;
let dummyHash: string | undefined;

const MIN_PASSWORD_LENGTH = 8;

/** A user name or password a new user cannot have; printed as one line, as the system's errors are. */
export class UserInputError extends Error {
  readonly code = 'EINVAL';
}

export function assertValidUsername(name: string): void {
  if (!isValidUsername(name)) throw new UserInputError(`invalid user name ${JSON.stringify(name)}: letters, digits and . _ @ - only`);
}

export function isValidUsername(name: string): boolean {
  return USERNAME_RE.test(name);
}

export function describeHash(hash: string): string {
  if (hash.startsWith('$apr1$')) return 'APR1-MD5';
  if (hash.startsWith('{SHA}')) return 'SHA-1';
  if (hash.startsWith('$5$') || hash.startsWith('$6$')) return 'SHA-crypt';
  if (/^[./A-Za-z0-9]{13}$/.test(hash)) return 'DES crypt';
  return 'an unknown or plain-text scheme';
}

export class HtpasswdFile {
  private users = new Map<string, string>();
  private mtimeMs = -1;
  private lastCheck = 0;
  private readonly verified = new Map<string, number>();

  constructor(
    readonly file: string,
    private readonly logger: Logger,
  ) {}

  /** Number of usable users. */
  size(): number {
    this.reloadIfChanged();
    return this.users.size;
  }

  has(name: string): boolean {
    this.reloadIfChanged();
    return this.users.has(name);
  }

  async verify(name: string, password: string): Promise<boolean> {
    this.reloadIfChanged();
    // An unknown name may have just been added: look at the file again before refusing.
    if (!this.users.has(name)) this.reloadIfChanged(true);
    const hash = this.users.get(name);
    if (!hash) {
      // Spend comparable time on unknown users so that timing does not reveal who exists.
      dummyHash ??= bcrypt.hashSync('not a password', BCRYPT_COST);
      await bcrypt.compare(password, dummyHash);
      return false;
    }
    const key = createHash('sha256').update(`${name}\0${password}\0${hash}`).digest('hex');
    const until = this.verified.get(key);
    if (until && until > Date.now()) return true;
    const ok = await bcrypt.compare(password, hash);
    if (ok) {
      if (this.verified.size > 10_000) this.verified.clear();
      this.verified.set(key, Date.now() + VERIFIED_TTL_MS);
    }
    return ok;
  }

  private reloadIfChanged(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastCheck < 1000 && this.mtimeMs >= 0) return;
    this.lastCheck = now;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.file).mtimeMs;
    } catch {
      this.users = new Map();
      this.mtimeMs = 0;
      return;
    }
    if (mtimeMs === this.mtimeMs) return;
    this.mtimeMs = mtimeMs;
    this.users = parseHtpasswd(readFileText(this.file), this.logger);
    this.verified.clear();
  }
}

/** Small file, read synchronously so that a check never sees a half-updated map. */
function readFileText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function parseHtpasswd(text: string, logger?: Logger): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, index) => {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) return;
    const colon = trimmed.indexOf(':');
    if (colon <= 0) {
      logger?.error({ line: index + 1 }, 'htpasswd line is not NAME:HASH; ignored');
      return;
    }
    const name = trimmed.slice(0, colon);
    const hash = trimmed.slice(colon + 1);
    if (!BCRYPT_RE.test(hash)) {
      logger?.error(
        { line: index + 1, user: name, scheme: describeHash(hash) },
        `htpasswd user ${name} has a ${describeHash(hash)} hash, which is refused: only bcrypt is accepted; set a new password with "gateway users add ${name}"`,
      );
      return;
    }
    users.set(name, hash);
  });
  return users;
}

/** Creates or updates a user in an htpasswd file (atomic rewrite, mode 0600). */
export async function upsertHtpasswdUser(file: string, name: string, password: string): Promise<'created' | 'updated'> {
  assertValidUsername(name);
  if (password.length < MIN_PASSWORD_LENGTH) throw new UserInputError(`password must have at least ${MIN_PASSWORD_LENGTH} characters`);
  const hash = await bcrypt.hash(password, BCRYPT_COST);
  let lines: string[] = [];
  try {
    lines = (await fsp.readFile(file, 'utf8')).split(/\r?\n/).filter((l) => l.trim().length > 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  let result: 'created' | 'updated' = 'created';
  lines = lines.map((line) => {
    if (line.slice(0, line.indexOf(':')) !== name) return line;
    result = 'updated';
    return `${name}:${hash}`;
  });
  if (result === 'created') lines.push(`${name}:${hash}`);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fsp.writeFile(temp, lines.join('\n') + '\n', { mode: 0o600 });
  await fsp.rename(temp, file);
  return result;
}

export function htpasswdExists(file: string): boolean {
  try {
    return statSync(file).size > 0;
  } catch {
    return false;
  }
}
