/**
 * One small interface over PGlite (embedded default) and PostgreSQL (pg), so the same SQL
 * and the same data-access code serve both. int8 columns come back as JS numbers
 * (sizes and counts stay far below 2^53).
 */
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { PGlite, types as pgliteTypes } from '@electric-sql/pglite';
import { ReplyCollector, type Field, type Reply } from './pglite-wire.js';
import { lockDirectory } from './dir-lock.js';
import { DurableNodeFS, durableStartParams, WalFlusher } from './pglite-durable.js';

export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface Transaction extends Queryable {
  /** Runs `fn` after the transaction has committed; never when it rolls back. */
  afterCommit(fn: () => void): void;
}

export interface Database extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /**
   * True when transactions never overlap (PGlite: one connection, one transaction at a
   * time). Advisory locks are then no-ops, and state read in one committed transaction is
   * still current when the next one starts.
   */
  readonly serial: boolean;
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T>;
  /**
   * Resolves once every commit made so far is on disk: a write is acknowledged after it. A
   * PostgreSQL server's commits are durable when they return; the embedded database flushes
   * its log here, one flush serving every commit made before it starts (pglite-durable.ts).
   */
  sync(): Promise<void>;
  /**
   * The housekeeping a server's autovacuum and checkpointer would do. PGlite has neither:
   * without VACUUM its tables and indexes keep every dead row, its planner works without
   * statistics (and keeps plans it made when the tables were empty), and transaction ids
   * are never frozen. Here it vacuums and analyses the tables that autovacuum would (by
   * its rules, see AUTOVACUUM), and checkpoints once the log since the last checkpoint is
   * large or old; it says what it did and how long the database was busy with it, or
   * null when nothing was due. On PostgreSQL it does nothing and returns null.
   */
  maintain(): Promise<Maintenance | null>;
  close(): Promise<void>;
}

export interface Maintenance {
  vacuumed: string[];
  analysed: string[];
  checkpointed: boolean;
  /** How long the checkpoint held the database (0 without one). */
  checkpointMs: number;
  /** How long the whole pass held it. */
  ms: number;
}

/** A transaction-scoped advisory lock on `key` (and the hash of `text`); a serial database needs none. */
export async function advisoryLock(db: Database, tx: Queryable, key: number, text?: string): Promise<void> {
  if (db.serial) return;
  if (text === undefined) await tx.query('SELECT pg_advisory_xact_lock($1)', [key]);
  else await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [key, text]);
}

/**
 * The conditions whose value is set, joined by AND, each `?` numbered as a parameter from
 * `$first` on (TRUE when none is set). Each combination of filters is its own statement
 * text, so its plan uses the indexes of exactly those filters: the one plan PGlite keeps
 * for "($1 IS NULL OR col = $1)" could use none.
 */
export function whereSet(conditions: Array<[condition: string, value: unknown]>, first = 1): { sql: string; params: unknown[] } {
  const params: unknown[] = [];
  const parts: string[] = [];
  for (const [condition, value] of conditions) {
    if (value === undefined || value === null) continue;
    params.push(value);
    parts.push(condition.replace('?', `$${first + params.length - 1}`));
  }
  return { sql: parts.length > 0 ? parts.join(' AND ') : 'TRUE', params };
}

/**
 * Runs a statement planned for its parameter values, where the best plan depends on them (a
 * time range: its share of a table decides between its index and another order). PGlite
 * otherwise plans each statement once, for any values; a server plans each call anyway.
 */
export function queryPlannedForValues<T>(db: Database, sql: string, params: unknown[]): Promise<T[]> {
  if (db.kind !== 'pglite') return db.query<T>(sql, params);
  return db.transaction(async (tx) => {
    await tx.query('SET LOCAL plan_cache_mode = force_custom_plan');
    return tx.query<T>(sql, params);
  });
}

/**
 * JSON text for a json/jsonb parameter. PostgreSQL cannot store U+0000 in text or jsonb, and
 * content read from images (SBOM package names, scanner findings, rule messages quoting
 * them) may hold it: it becomes U+FFFD, in strings and in keys.
 */
export function jsonParam(value: unknown): string {
  // JSON.stringify writes U+0000 as \u0000: without that text (nearly always) there is nothing
  // to replace, and the walk below, which calls a function for every value, is skipped.
  const plain = JSON.stringify(value) as string | undefined;
  if (plain === undefined || !plain.includes('\\u0000')) return plain as string;
  return JSON.stringify(value, (_key, member: unknown) => {
    if (typeof member === 'string') return member.includes('\0') ? member.replaceAll('\0', '\uFFFD') : member;
    if (member !== null && typeof member === 'object' && !Array.isArray(member) && Object.keys(member).some((k) => k.includes('\0'))) {
      return Object.fromEntries(Object.entries(member).map(([k, v]) => [k.replaceAll('\0', '\uFFFD'), v]));
    }
    return member;
  });
}

/** Text for a text parameter that may come from the network: U+0000 (which PostgreSQL cannot store) becomes U+FFFD. */
export function textParam<T extends string | null>(value: T): T {
  return (value !== null && value.includes('\0') ? value.replaceAll('\0', '\uFFFD') : value) as T;
}

/** Runs the callbacks a transaction registered, once it has committed. */
function runAfterCommit(callbacks: Array<() => void>): void {
  for (const fn of callbacks) fn();
}

const INT8_OID = 20;

/**
 * PGlite through its wire-protocol entry point. PGlite's own query() parses, describes,
 * binds, describes again and executes every statement, one call into WebAssembly each; here
 * each statement text is prepared once under a name, and a query is one Bind + Execute +
 * Sync batch and one call. DDL and transaction control go as simple queries. One mutex
 * orders standalone statements and whole transactions, as PGlite's own query() does.
 */
class PgliteDatabase implements Database {
  readonly kind = 'pglite' as const;
  readonly serial = true;
  private readonly statements = new Map<string, Prepared>();
  private tail: Promise<unknown> = Promise.resolve();
  /** Committed transactions and standalone statements other than SELECT since the last CHECKPOINT. */
  private writes = 0;
  /** Set by close(): housekeeping under way stops at the next table. */
  private closing = false;
  /** Set while maintain() runs: a call that comes meanwhile (a long VACUUM) does nothing. */
  private maintaining = false;

  constructor(
    private readonly db: PGlite,
    private readonly checkpointWalBytes: number,
    /** Frees the data directory's lock (dir-lock.ts) once the database is closed. */
    private readonly release: () => void,
    /** Makes commits durable before they are acknowledged (pglite-durable.ts). */
    readonly wal: WalFlusher,
    /** The file system under PGlite, which gathers a checkpoint's flushes (pglite-durable.ts). */
    readonly files: DurableNodeFS,
  ) {}

  query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    if (!READ_ONLY.test(sql)) this.writes++;
    return this.exclusive(() => this.run<T>(sql, params));
  }

  sync(): Promise<void> {
    return this.wal.flush();
  }

  /** One table at a time, so that requests waiting for the database run between tables. */
  async maintain(): Promise<Maintenance | null> {
    if (this.closing || this.maintaining || this.writes === 0) return null;
    this.maintaining = true;
    try {
      return await this.maintainTables();
    } finally {
      this.maintaining = false;
    }
  }

  /**
   * Each step (a VACUUM, an ANALYZE, the checkpoint) is its own statement and starts from a
   * fresh turn of the event loop: a call into PGlite never gives the loop a turn, so a whole
   * pass (up to about 200 ms after a burst of manifest PUTs) would hold up every socket,
   * blob transfers included; between steps, what arrived meanwhile is read and answered.
   * Later steps wait MAINTENANCE_STEP_GAP_MS after the one before.
   */
  private async maintainTables(): Promise<Maintenance | null> {
    const work = await this.maintenanceDue();
    const done: Maintenance = { vacuumed: [], analysed: [], checkpointed: false, checkpointMs: 0, ms: 0 };
    const steps = work.tables.flatMap(({ name, vacuum, analyse }) => [
      ...(vacuum ? [{ sql: `VACUUM ${name}`, record: () => done.vacuumed.push(name) }] : []),
      ...(analyse ? [{ sql: `ANALYZE ${name}`, record: () => done.analysed.push(name) }] : []),
    ]);
    for (const [i, step] of steps.entries()) {
      await beforeStep(i === 0);
      if (this.closing) break;
      done.ms += await this.timed(step.sql);
      step.record();
    }
    // A checkpoint bounds the write-ahead log kept on disk and what crash recovery replays at
    // the next start (a standalone backend only checkpoints when asked, or when the log
    // outgrows max_wal_size).
    if (work.checkpoint) {
      // What PostgreSQL wrote out of its buffers since the last checkpoint goes to disk first,
      // off the event loop while requests are served, so the checkpoint has less to wait for.
      await this.files.flushWrittenData();
      await beforeStep(steps.length === 0);
      if (!this.closing) {
        this.writes = 0;
        done.checkpointMs = await this.timed('CHECKPOINT', (run) => this.files.gatheringFlushes(run));
        done.ms += done.checkpointMs;
        done.checkpointed = true;
      }
    }
    return done.ms > 0 ? done : null;
  }

  /** Which tables autovacuum's rules would vacuum or analyse now, and whether a checkpoint is due. */
  private async maintenanceDue(): Promise<{ tables: Array<{ name: string; vacuum: boolean; analyse: boolean }>; checkpoint: boolean }> {
    // Table statistics reach the shared counters at most once a second; this makes them current.
    await this.query('SELECT pg_stat_force_next_flush()');
    const rows = await this.query<{ name: string; vacuum: boolean; analyse: boolean }>(
      `SELECT quote_ident(s.relname) AS name,
              s.n_dead_tup > $1 + $2 * greatest(c.reltuples, 0)
                OR s.n_ins_since_vacuum > $3 + $2 * greatest(c.reltuples, 0)
                OR age(c.relfrozenxid) > $4 AS vacuum,
              s.n_mod_since_analyze > $5 + $6 * greatest(c.reltuples, 0) AS analyse
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = current_schema() ORDER BY s.relname`,
      [AUTOVACUUM.vacuumThreshold, AUTOVACUUM.vacuumScale, AUTOVACUUM.insertThreshold, AUTOVACUUM.freezeAge, AUTOVACUUM.analyzeThreshold, AUTOVACUUM.analyzeScale],
    );
    const [log] = await this.query<{ behind: number; seconds: number }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), redo_lsn)::float8 AS behind,
              extract(epoch FROM now() - checkpoint_time)::float8 AS seconds FROM pg_control_checkpoint()`,
    );
    const checkpoint = log.behind >= this.checkpointWalBytes || (log.behind >= CHECKPOINT.minWalBytes && log.seconds >= CHECKPOINT.seconds);
    return { tables: rows.filter((t) => t.vacuum || t.analyse), checkpoint };
  }

  /**
   * Runs `sql` on its own, through `around` when given (a CHECKPOINT goes through
   * DurableNodeFS.gatheringFlushes, so that its data files are flushed together); its time in ms.
   */
  private timed(sql: string, around = (run: () => Promise<unknown>) => run()): Promise<number> {
    return this.exclusive(async () => {
      const started = performance.now();
      await around(() => this.run(sql, []));
      return performance.now() - started;
    });
  }

  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.exclusive(async () => {
      await this.run('BEGIN', []);
      let open = true;
      const committed: Array<() => void> = [];
      const tx: Transaction = {
        query: <R>(sql: string, params: unknown[] = []) => {
          if (!open) return Promise.reject(new Error('the transaction has ended'));
          return this.run<R>(sql, params);
        },
        afterCommit: (fn) => committed.push(fn),
      };
      try {
        const value = await fn(tx);
        open = false;
        await this.run('COMMIT', []);
        this.writes++;
        runAfterCommit(committed);
        return value;
      } catch (err) {
        open = false;
        await this.run('ROLLBACK', []).catch(() => undefined);
        throw err;
      }
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    try {
      await this.wal.flush().catch(() => undefined);
      await this.exclusive(() => this.db.close());
    } finally {
      this.release();
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async run<T>(sql: string, params: unknown[]): Promise<T[]> {
    if (params.length === 0 && !PREPARABLE.test(sql)) return this.rows<T>(await this.exec(serialize.query(sql)), null);
    const statement = this.statements.get(sql) ?? (await this.prepare(sql));
    const values = params.map((value, i) => this.serializeParam(value, statement.paramTypes[i] as number));
    const batch = Buffer.concat([serialize.bind({ statement: statement.name, values }), serialize.execute({}), serialize.sync()]);
    return this.rows<T>(await this.exec(batch), statement.fields);
  }

  /** Parses a statement under a new name and learns its parameter and result types. */
  private async prepare(sql: string): Promise<Prepared> {
    const name = this.statements.size < MAX_PREPARED ? `s${this.statements.size + 1}` : '';
    const reply = await this.exec(Buffer.concat([serialize.parse({ name, text: sql }), serialize.describe({ type: 'S', name }), serialize.sync()]));
    const prepared: Prepared = { name, paramTypes: reply.paramTypes ?? [], fields: reply.fields ?? [] };
    if (name) this.statements.set(sql, prepared);
    return prepared;
  }

  /**
   * The data directory is a NodeFS mount: PostgreSQL's writes reach the files as it makes
   * them and PGlite's syncToFs does nothing there, so it is not asked for (it would only
   * queue on PGlite's own mutex after every statement).
   */
  private async exec(message: Uint8Array): Promise<Reply> {
    const collector = new ReplyCollector();
    await this.db.execProtocolRawStream(message, { syncToFs: false, onRawData: collector.onRawData });
    const reply = collector.reply();
    if (reply.error) throw reply.error;
    return reply;
  }

  private serializeParam(value: unknown, type: number): string | null {
    if (value === null || value === undefined) return null;
    // PGlite's own bytea serializer formats byte by byte (about 0.1 s per MiB).
    if (type === pgliteTypes.BYTEA && value instanceof Uint8Array) return `\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
    const serializer = this.db.serializers[type];
    return serializer ? (serializer(value) as string) : String(value);
  }

  /** Rows of the (last) result: typed by the prepared statement's fields, or by its row description. */
  private rows<T>(reply: Reply, known: Prepared['fields'] | null): T[] {
    const fields = known ?? reply.fields ?? [];
    const { parsers } = this.db;
    return reply.rows.map((values) => {
      const row: Record<string, unknown> = {};
      for (let i = 0; i < values.length; i++) {
        const field = fields[i] as Field;
        const value = values[i] as string | null;
        row[field.name] = value === null ? null : pgliteTypes.parseType(value, field.type, parsers);
      }
      return row as T;
    });
  }
}

/** Standalone statements that write nothing (they do not count towards maintenance). */
const READ_ONLY = /^\s*(SELECT|SHOW|EXPLAIN)\b/i;
/** Statements worth preparing even without parameters; DDL and transaction control go as simple queries. */
const PREPARABLE = /^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b/i;
/** Beyond this many distinct statement texts, statements are parsed unnamed each time. */
const MAX_PREPARED = 1000;

interface Prepared {
  name: string;
  paramTypes: number[];
  fields: Field[];
}

class PostgresDatabase implements Database {
  readonly kind = 'postgres' as const;
  readonly serial = false;
  constructor(private readonly pool: pg.Pool) {}

  async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    const result = await this.pool.query(sql, params);
    return result.rows as T[];
  }

  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const committed: Array<() => void> = [];
      const value = await fn({
        query: async <R>(sql: string, params: unknown[] = []) => (await client.query(sql, params)).rows as R[],
        afterCommit: (fn) => committed.push(fn),
      });
      await client.query('COMMIT');
      runAfterCommit(committed);
      return value;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async maintain(): Promise<null> {
    return null; // the server's autovacuum and checkpointer do it
  }

  async sync(): Promise<void> {
    // A server's commits are on disk when they return (synchronous_commit).
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

export interface DatabaseOptions {
  /** postgres:// URL; when absent, PGlite in `pgliteDir`. */
  url?: string;
  pgliteDir: string;
  poolSize?: number;
  /** Errors of idle pooled connections (server restart, admin termination); they must not crash the process. */
  onIdleError?: (err: Error) => void;
  /** PGlite: bytes of write-ahead log after which maintain() checkpoints (default 64 MiB). */
  checkpointWalBytes?: number;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  let db: Database;
  if (options.url) {
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 20,
      types: { getTypeParser: (oid, format) => (oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format)) } as pg.CustomTypesConfig,
    });
    pool.on('error', (err) => options.onIdleError?.(err));
    db = new PostgresDatabase(pool);
  } else {
    await mkdir(options.pgliteDir, { recursive: true });
    const release = lockDirectory(options.pgliteDir);
    try {
      db = await openPglite(options.pgliteDir, options.checkpointWalBytes ?? CHECKPOINT.walBytes, release);
    } catch (err) {
      release();
      throw err;
    }
  }
  try {
    await migrate(db);
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}

/** PGlite in `dir` (initialised when new), closed together with the lock `release` frees. */
async function openPglite(dir: string, checkpointWalBytes: number, release: () => void): Promise<Database> {
  if (!existsSync(path.join(dir, 'PG_VERSION'))) await initPgliteDir(dir);
  const wal = new WalFlusher();
  const fs = new DurableNodeFS(dir, wal);
  const lite = await PGlite.create({
    fs,
    startParams: durableStartParams(PGlite.defaultStartParams),
    // bytea as a Buffer, decoded at once (PGlite's own parser decodes byte by byte).
    parsers: { [pgliteTypes.INT8]: (value: string) => Number(value), [pgliteTypes.BYTEA]: (value: string) => Buffer.from(value.slice(2), 'hex') },
    // An embedded database for one process: a small buffer cache keeps the WASM heap small,
    // and coarse statistics keep the ANALYZE that maintain() runs short (every lookup is by key).
    // The log is capped well below PostgreSQL's 1 GB default: recovery after a crash replays it.
    // Prepared statements keep one generic plan: planning runs on the one thread that serves
    // every request, and once tables had statistics PostgreSQL chose to re-plan the hot
    // statements that take arrays on every call (0.3-0.6 ms each). Statements with optional
    // filters are written per combination of filters (whereSet), so that a generic plan of
    // each can use its indexes, and maintain()'s ANALYZE replaces plans made while the tables
    // were small. The database sits in the page cache, so an index probe costs about what a
    // sequential page read does (random_page_cost 1.1, as for SSDs): at the default of 4, the
    // generic plans of key lookups scanned whole tables of a few thousand rows.
    postgresqlconf: [
      `shared_buffers = ${PGLITE_SHARED_BUFFERS}`,
      `default_statistics_target = ${PGLITE_STATISTICS_TARGET}`,
      `max_wal_size = ${PGLITE_MAX_WAL_SIZE}`,
      `min_wal_size = ${PGLITE_MIN_WAL_SIZE}`,
      `plan_cache_mode = force_generic_plan`,
      `random_page_cost = 1.1`,
    ],
  });
  if (!fs.hooked) {
    await lite.close();
    throw new Error(`this PGlite does not expose the file system hooks that make its commits durable; refusing to run without them`);
  }
  return new PgliteDatabase(lite, checkpointWalBytes, release, wal, fs);
}

/**
 * Time between two steps of a housekeeping pass. A step holds the database's one thread for
 * its whole statement (a VACUUM or an ANALYZE of one table took 5-25 ms here; a pass after a
 * burst of manifest PUTs, 22-69 ms in all). Run one after the other, a request waiting for
 * the database met several of them in a row; spaced, it meets one at most.
 */
export const MAINTENANCE_STEP_GAP_MS = 100;

/** The wait before a housekeeping step: a fresh turn of the event loop for the first, the gap after the one before for the others. */
function beforeStep(first: boolean): Promise<unknown> {
  return first ? nextTurn() : sleep(MAINTENANCE_STEP_GAP_MS, undefined, { ref: false });
}
const PGLITE_SHARED_BUFFERS = '32MB';
/**
 * Statistics from a sample of 300 rows per table (PostgreSQL samples 300 times the target). Every
 * lookup is by key, and one generic plan serves each statement; what ANALYZE must give the
 * planner is the tables' sizes. Each ANALYZE holds the database's one thread: under manifest
 * PUTs at c=16 (a scratch build timing each step), those of audit_log and admissions took
 * 17-28 ms at a target of 10 and at most 11 at 1.
 */
const PGLITE_STATISTICS_TARGET = 1;
const PGLITE_MAX_WAL_SIZE = '256MB';
const PGLITE_MIN_WAL_SIZE = '32MB';
/**
 * When maintain() works on a table, by autovacuum's rules: vacuum once its dead rows exceed a
 * base plus 20% of its rows, or rows inserted since its last vacuum do (so insert-only tables
 * get their visibility map and frozen rows too), or its oldest unfrozen transaction id is older
 * than vacuum_freeze_table_age (so that VACUUM freezes it); analyse once rows changed since its
 * last ANALYZE exceed a base plus 10%. Growth by a tenth re-analyses a table, so the work
 * shrinks as the database grows. The base is 1,000 rows where autovacuum's is 50: statistics
 * of a table smaller than that change no plan here, and each ANALYZE makes every statement
 * on the table plan again.
 */
const AUTOVACUUM = {
  vacuumThreshold: 1000,
  vacuumScale: 0.2,
  insertThreshold: 1000,
  freezeAge: 150_000_000,
  analyzeThreshold: 1000,
  analyzeScale: 0.1,
};
/** A checkpoint once 64 MiB of log follow the last one, or 5 minutes after it once there is more than a trickle. */
const CHECKPOINT = { walBytes: 64 * 1024 * 1024, minWalBytes: 64 * 1024, seconds: 300 };

/** Runs initdb for a new PGlite directory in a child process (see pglite-init.ts). */
async function initPgliteDir(dir: string): Promise<void> {
  const here = fileURLToPath(import.meta.url);
  const script = path.join(path.dirname(here), `pglite-init${path.extname(here)}`);
  await new Promise<void>((resolve, reject) => {
    const child = fork(script, [dir], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`initialising the PGlite database in ${dir} failed (${signal ?? code}): ${stderr.trim()}`)),
    );
  });
}

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');
/** Arbitrary constant that serialises migrations across replicas sharing one database. */
const MIGRATION_LOCK = 7_340_021;

/** Applies every `NNN_name.sql` in migrations/ not yet recorded in schema_migrations, in order. */
export async function migrate(db: Database): Promise<string[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return db.transaction(async (tx) => {
    await advisoryLock(db, tx, MIGRATION_LOCK);
    await tx.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set((await tx.query<{ version: string }>('SELECT version FROM schema_migrations')).map((r) => r.version));
    const applied: string[] = [];
    for (const file of files) {
      const version = file.replace(/\.sql$/, '');
      if (done.has(version)) continue;
      const sql = await readFile(path.join(MIGRATIONS_DIR, file), 'utf8');
      for (const statement of splitStatements(sql)) await tx.query(statement);
      await tx.query('INSERT INTO schema_migrations (version) VALUES ($1)', [version]);
      applied.push(version);
    }
    return applied;
  });
}

/**
 * Migrations are plain DDL: statements end with `;` at the end of a line, except inside a
 * function body quoted with `$$` (its own statements end that way too).
 */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let current = '';
  let quoted = false;
  for (const line of sql.split('\n')) {
    if (!quoted && /^\s*--/.test(line)) continue;
    current += `${line}\n`;
    if ((line.match(/\$\$/g) ?? []).length % 2 === 1) quoted = !quoted;
    if (!quoted && /;\s*$/.test(line)) {
      statements.push(current.trim().replace(/;$/, ''));
      current = '';
    }
  }
  if (current.trim()) statements.push(current.trim());
  return statements.filter((s) => s.length > 0);
}
