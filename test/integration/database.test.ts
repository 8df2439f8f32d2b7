/**
 * The Database seam itself, on PGlite (statements prepared once and run through PGlite's
 * wire-protocol entry point) and on PostgreSQL (pg): the same answers, types and errors.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { advisoryLock, jsonParam, MAINTENANCE_STEP_GAP_MS, openDatabase, queryPlannedForValues, splitStatements, whereSet, type Database } from '../../src/db/database.js';
import { DirectoryInUseError } from '../../src/db/dir-lock.js';
import type { DurableNodeFS, WalFlusher } from '../../src/db/pglite-durable.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { DATABASE_KINDS } from '../helpers/gateway.js';

for (const kind of DATABASE_KINDS) {
  describe(`database seam on ${kind}`, () => {
    let db: Database;
    let dir: string;

    before(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'db-'));
      db = await openDatabase({ url: kind === 'postgres' ? await createTestDatabase() : undefined, pgliteDir: dir });
      await db.query('CREATE TABLE seam_test (id bigint PRIMARY KEY, name text, tags text[], doc jsonb, at timestamptz, ok boolean)');
    });
    after(async () => {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('sends parameters and reads columns with their types, the same each time a statement runs again', async () => {
      const insert = 'INSERT INTO seam_test (id, name, tags, doc, at, ok) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, tags, doc, at, ok';
      const when = new Date('2026-11-30T10:00:00.000Z');
      for (const id of [1, 2]) {
        const [row] = await db.query<Record<string, unknown>>(insert, [id, `n${id}`, ['a', 'b c', 'd"e'], JSON.stringify({ k: id }), when.toISOString(), id === 1]);
        expect(row).to.deep.equal({ id, tags: ['a', 'b c', 'd"e'], doc: { k: id }, at: when, ok: id === 1 });
      }
      const rows = await db.query<{ id: number; name: string | null }>('SELECT id, name FROM seam_test WHERE id = ANY($1::bigint[]) ORDER BY id', [[1, 2, 3]]);
      expect(rows).to.deep.equal([
        { id: 1, name: 'n1' },
        { id: 2, name: 'n2' },
      ]);
      expect(await db.query('SELECT name FROM seam_test WHERE id = $1', [null])).to.deep.equal([]);
      expect(await db.query<{ n: number }>('SELECT count(*) AS n FROM seam_test')).to.deep.equal([{ n: 2 }]);
    });

    it('reports a violated constraint with its SQLSTATE and keeps working', async () => {
      let error: (Error & { code?: string }) | undefined;
      await db.query('INSERT INTO seam_test (id) VALUES ($1)', [1]).catch((e: Error) => (error = e));
      expect(error?.code).to.equal('23505');
      expect(error).to.include({ constraint: 'seam_test_pkey', table: 'seam_test', detail: 'Key (id)=(1) already exists.', severity: 'ERROR' });
      expect(error?.message).to.match(/duplicate key value violates unique constraint "seam_test_pkey"/);
      expect(await db.query<{ id: number }>('SELECT id FROM seam_test WHERE id = $1', [1])).to.deep.equal([{ id: 1 }]);
    });

    it('rolls a transaction back when its callback throws, and commits otherwise', async () => {
      await db
        .transaction(async (tx) => {
          await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [10]);
          throw new Error('abandon');
        })
        .catch(() => undefined);
      expect(await db.query('SELECT id FROM seam_test WHERE id = $1', [10])).to.deep.equal([]);
      // A failed statement aborts the transaction; the whole of it is rolled back.
      await db
        .transaction(async (tx) => {
          await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [11]);
          await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [11]);
        })
        .catch(() => undefined);
      expect(await db.query('SELECT id FROM seam_test WHERE id = $1', [11])).to.deep.equal([]);
      const value = await db.transaction(async (tx) => {
        await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [12]);
        return (await tx.query<{ id: number }>('SELECT id FROM seam_test WHERE id = $1', [12]))[0]?.id;
      });
      expect(value).to.equal(12);
    });

    it('runs after-commit callbacks once the transaction commits, never when it rolls back', async () => {
      const ran: string[] = [];
      await db
        .transaction(async (tx) => {
          tx.afterCommit(() => ran.push('rolled back'));
          await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [20]);
          throw new Error('abandon');
        })
        .catch(() => undefined);
      await db
        .transaction(async (tx) => {
          tx.afterCommit(() => ran.push('failed commit'));
          // A deferred constraint fails at COMMIT itself.
          await tx.query('CREATE TEMP TABLE seam_deferred (id int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP');
          await tx.query('INSERT INTO seam_deferred VALUES (1), (1)');
        })
        .catch(() => undefined);
      await db.transaction(async (tx) => {
        tx.afterCommit(() => ran.push('committed'));
        await tx.query('INSERT INTO seam_test (id) VALUES ($1)', [21]);
        expect(ran).to.deep.equal([]);
      });
      expect(ran).to.deep.equal(['committed']);
    });

    it('takes advisory locks on PostgreSQL and needs none on PGlite, whose transactions never overlap', async () => {
      expect(db.serial).to.equal(kind === 'pglite');
      const order: string[] = [];
      const hold = (name: string, ms: number) =>
        db.transaction(async (tx) => {
          await advisoryLock(db, tx, 4242, 'subject');
          order.push(`${name} in`);
          await new Promise((r) => setTimeout(r, ms));
          order.push(`${name} out`);
        });
      await Promise.all([hold('a', 100), hold('b', 0)]);
      // Either by the lock (PostgreSQL) or by the one connection (PGlite): never interleaved.
      const first = order[0].split(' ')[0];
      const second = first === 'a' ? 'b' : 'a';
      expect(order).to.deep.equal([`${first} in`, `${first} out`, `${second} in`, `${second} out`]);
    });

    it('runs standalone statements in order with transactions, never inside one', async () => {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const tx = db.transaction(async (q) => {
        await q.query('INSERT INTO seam_test (id) VALUES ($1)', [20]);
        await held;
        await q.query('DELETE FROM seam_test WHERE id = $1', [20]);
      });
      // Started while the transaction is open: it must see the state after it, not inside it.
      const seen = db.query('SELECT id FROM seam_test WHERE id = $1', [20]);
      setTimeout(release, 20);
      await tx;
      expect(await seen).to.deep.equal([]);
    });

    it('vacuums and analyses PGlite tables past autovacuum thresholds, checkpoints its log, and leaves PostgreSQL to its autovacuum', async () => {
      const dir2 = mkdtempSync(path.join(tmpdir(), 'db-maintain-'));
      const url = kind === 'postgres' ? await createTestDatabase() : undefined;
      const small = await openDatabase({ url, pgliteDir: dir2, checkpointWalBytes: 256 * 1024 });
      try {
        await small.maintain(); // whatever the migrations left due
        await small.query('CREATE TABLE churn (id int PRIMARY KEY, n int)');
        await small.query('CREATE TABLE quiet (id int PRIMARY KEY)');
        for (let i = 0; i < 20; i++) await small.query('INSERT INTO churn VALUES ($1, 0)', [i]);
        for (let i = 0; i < 5; i++) await small.query('INSERT INTO quiet VALUES ($1)', [i]);
        const stats = async (table: string) =>
          (
            await small.query<{ reltuples: number; dead: number }>(
              `SELECT c.reltuples, s.n_dead_tup AS dead FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = $1`,
              [table],
            )
          )[0];
        // 20 inserts are below the thresholds (1,000 changed rows plus a share of the table).
        expect(await small.maintain()).to.equal(null);
        for (let i = 0; i < 10; i++) await small.transaction((tx) => tx.query('UPDATE churn SET n = n + 1'));
        await small.query('INSERT INTO churn SELECT i, 0 FROM generate_series(20, 1119) AS i');
        await small.query(`SELECT pg_logical_emit_message(true, 'test', repeat('x', 300000))`); // 300 kB of log
        const redoBefore = (await small.query<{ lsn: string }>('SELECT redo_lsn::text AS lsn FROM pg_control_checkpoint()'))[0].lsn;
        // Turns of the event loop while it runs: requests are served between its steps.
        let turns = 0;
        let counting = true;
        const tick = () => {
          if (!counting) return;
          turns++;
          setImmediate(tick);
        };
        setImmediate(tick);
        // A second call while the first runs does nothing (the timer may fire during a long VACUUM).
        const started = performance.now();
        const [done, meanwhile] = await Promise.all([small.maintain(), small.maintain()]);
        const took = performance.now() - started;
        counting = false;
        if (kind === 'postgres') {
          expect(done).to.equal(null);
          return;
        }
        expect(meanwhile).to.equal(null);
        expect(turns).to.be.at.least(3); // before the VACUUM, the ANALYZE and the CHECKPOINT
        // Spaced: the ANALYZE and the CHECKPOINT each wait after the step before (a timer may fire up to 1 ms early).
        expect(took).to.be.at.least(2 * (MAINTENANCE_STEP_GAP_MS - 1));
        // 1,120 inserted rows and 1,320 changed ones: churn is vacuumed and analysed; quiet (5 inserts) is left alone.
        expect(done?.vacuumed).to.deep.equal(['churn']);
        expect(done?.analysed).to.deep.equal(['churn']);
        expect(await stats('churn')).to.deep.equal({ reltuples: 1120, dead: 0 });
        expect((await stats('quiet')).reltuples).to.equal(-1);
        // And a checkpoint (past 256 KiB of log, in this test): its redo point moved up to the end of the log.
        expect(done?.checkpointed).to.equal(true);
        const [{ behind, moved }] = await small.query<{ behind: number; moved: number }>(
          `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), redo_lsn)::float8 AS behind,
                  pg_wal_lsn_diff(redo_lsn, $1::pg_lsn)::float8 AS moved FROM pg_control_checkpoint()`,
          [redoBefore],
        );
        expect(moved).to.be.greaterThan(0);
        expect(behind).to.be.lessThan(1024);
        expect(await small.maintain()).to.equal(null); // nothing written since
        // Changes below the thresholds leave the table be, and a little log is no reason to checkpoint.
        await small.query('UPDATE churn SET n = 0 WHERE id < 10');
        expect(await small.maintain()).to.equal(null);
      } finally {
        await small.close();
        rmSync(dir2, { recursive: true, force: true });
      }
    });

    it('plans PGlite statements once, and per call where asked, without the setting outliving the call', async () => {
      const mode = async (rows: Promise<Array<{ plan_cache_mode: string }>>) => (await rows)[0].plan_cache_mode;
      const planned = await mode(queryPlannedForValues(db, 'SHOW plan_cache_mode', []));
      expect(planned).to.equal(kind === 'pglite' ? 'force_custom_plan' : 'auto');
      expect(await mode(db.query('SHOW plan_cache_mode'))).to.equal(kind === 'pglite' ? 'force_generic_plan' : 'auto');
    });

    it('builds a WHERE clause of the filters that are set, numbered from a given parameter', async () => {
      expect(whereSet([['a = ?', 'x'], ['b = ?', undefined], ['c > ?', 3]], 2)).to.deep.equal({ sql: 'a = $2 AND c > $3', params: ['x', 3] });
      expect(whereSet([['a = ?', null]])).to.deep.equal({ sql: 'TRUE', params: [] });
      await db.query('INSERT INTO seam_test (id) VALUES ($1), ($2)', [40, 41]);
      const where = whereSet([['id > ?', 39], ['id < ?', undefined]], 2);
      const rows = await db.query<{ id: number }>(`SELECT id FROM seam_test WHERE ${where.sql} AND id < $1 ORDER BY id`, [42, ...where.params]);
      expect(rows.map((r) => r.id)).to.deep.equal([40, 41]);
    });

    it('stores JSON holding U+0000 (which PostgreSQL cannot) with U+FFFD in its place, in strings and keys', async () => {
      const doc = { name: 'pkg\u0000evil', ['key\u0000']: ['a\u0000', 1, null, { deep: '\u0000' }], plain: 'ok' };
      await db.query('INSERT INTO seam_test (id, doc) VALUES ($1, $2)', [30, jsonParam(doc)]);
      const [row] = await db.query<{ doc: unknown }>('SELECT doc FROM seam_test WHERE id = $1', [30]);
      expect(row.doc).to.deep.equal({ name: 'pkg\uFFFDevil', ['key\uFFFD']: ['a\uFFFD', 1, null, { deep: '\uFFFD' }], plain: 'ok' });
      expect(jsonParam({ a: 'no nul here' })).to.equal(JSON.stringify({ a: 'no nul here' }));
      // The text \u0000 (a backslash, not U+0000) stays as it is, beside a real U+0000 or alone.
      expect(JSON.parse(jsonParam({ a: '\\u0000', b: '\u0000' }))).to.deep.equal({ a: '\\u0000', b: '\uFFFD' });
      expect(JSON.parse(jsonParam(['\\u0000']))).to.deep.equal(['\\u0000']);
    });

    it('stores and reads bytea exactly, small and large', async () => {
      await db.query('CREATE TABLE IF NOT EXISTS bytea_test (id int PRIMARY KEY, b bytea)');
      const small = Buffer.from([0, 1, 0x5c, 0x27, 0x7f, 0x80, 0xff]);
      const large = Buffer.alloc(3 * 1024 * 1024, 0xa5);
      large.write('head', 0);
      await db.query('INSERT INTO bytea_test (id, b) VALUES ($1, $2), ($3, $4)', [1, small, 2, large]);
      const rows = await db.query<{ id: number; b: Uint8Array }>('SELECT id, b FROM bytea_test ORDER BY id');
      expect(Buffer.from(rows[0].b).equals(small)).to.equal(true);
      expect(Buffer.from(rows[1].b).equals(large)).to.equal(true);
    });

    it('reads text exactly: NULL apart from empty, non-ASCII values and column names, in simple and prepared queries', async () => {
      const [row] = await db.query<Record<string, unknown>>('SELECT $1::text AS "naïve ✓", $2::text AS empty, NULL::text AS nothing, $3::int AS n', ['grüße 🐳', '', 7]);
      expect(row).to.deep.equal({ 'naïve ✓': 'grüße 🐳', empty: '', nothing: null, n: 7 });
      // Not a statement PGlite prepares: sent as a simple query, its columns come with its rows.
      expect(await db.query('SHOW client_encoding')).to.deep.equal([{ client_encoding: 'UTF8' }]);
      let error: (Error & { code?: string; position?: string }) | undefined;
      await db.query('SELECT nosuchcolumn FROM seam_test').catch((e: Error) => (error = e));
      expect(error?.code).to.equal('42703');
      expect(error?.position).to.equal('8');
      expect(await db.query('SELECT 2 AS b')).to.deep.equal([{ b: 2 }]);
    });

    it('runs many distinct statement texts (more than it keeps prepared)', async () => {
      for (let i = 0; i < 1100; i++) {
        const [row] = await db.query<{ v: number }>(`SELECT $1::int + ${i} AS v`, [1]);
        expect(row?.v).to.equal(i + 1);
      }
    });
  });
}

describe('migration statements', () => {
  it('end at a semicolon that ends a line, except inside a $$-quoted function body; comment lines are dropped', () => {
    const sql = [
      '-- a comment',
      'CREATE TABLE t (a int); ',
      'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$',
      'BEGIN',
      '  -- inside the body',
      '  RETURN 1;',
      'END',
      '$$;',
      'CREATE INDEX i ON t (a)',
      '  WHERE a > 0;',
      '',
    ].join('\n');
    expect(splitStatements(sql)).to.deep.equal([
      'CREATE TABLE t (a int)',
      'CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  -- inside the body\n  RETURN 1;\nEND\n$$',
      'CREATE INDEX i ON t (a)\n  WHERE a > 0',
    ]);
  });
});

describe('the embedded database directory', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(path.join(tmpdir(), 'db-lock-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  /** A process that lives until killed: a Node.js one (as a gateway is) or another program. */
  const holder = (command: string, args: string[]) => {
    const child = spawn(command, args, { stdio: 'ignore' });
    return { pid: child.pid!, stop: () => new Promise((resolve) => (child.kill('SIGKILL'), child.once('exit', resolve))) };
  };
  const lockNaming = (dir: string, pid: number) => writeFileSync(`${dir}.lock`, JSON.stringify({ pid, since: new Date().toISOString(), command: 'x' }));

  it('is opened by one database at a time, and free again once it is closed', async () => {
    const dir = path.join(root, 'pglite');
    const first = await openDatabase({ pgliteDir: dir });
    try {
      let refused: Error | null = null;
      await openDatabase({ pgliteDir: dir }).catch((err: Error) => (refused = err));
      expect(refused).to.be.instanceOf(DirectoryInUseError);
      expect(existsSync(`${dir}.lock`)).to.equal(true);
    } finally {
      await first.close();
    }
    expect(existsSync(`${dir}.lock`)).to.equal(false);
    const again = await openDatabase({ pgliteDir: dir });
    await again.close();
  });

  it('is refused while another Node.js process holds it, and taken over once that process is gone', async () => {
    const dir = path.join(root, 'pglite');
    const other = holder(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      lockNaming(dir, other.pid);
      let refused: Error | null = null;
      await openDatabase({ pgliteDir: dir }).catch((err: Error) => (refused = err));
      expect(refused).to.be.instanceOf(DirectoryInUseError);
      expect(refused!.message).to.contain(`in use by process ${other.pid}`);
      expect(refused!.message).to.contain(`remove ${dir}.lock`);
    } finally {
      await other.stop();
    }
    // A crash leaves the lock behind; its process is gone.
    const db = await openDatabase({ pgliteDir: dir });
    expect(JSON.parse(readFileSync(`${dir}.lock`, 'utf8')).pid).to.equal(process.pid);
    await db.close();
  }).timeout(60_000);

  it('takes over a lock whose pid another program has since', async () => {
    const dir = path.join(root, 'pglite');
    const sleeper = holder('sleep', ['60']);
    try {
      lockNaming(dir, sleeper.pid);
      const db = await openDatabase({ pgliteDir: dir });
      await db.close();
    } finally {
      await sleeper.stop();
    }
  }).timeout(60_000);
});

/** The parts of PGlite's Emscripten NODEFS that a test wraps. */
interface NodeFsForTest {
  realPath(node: unknown): string;
  stream_ops: { write: (this: unknown, stream: { node: unknown }, ...rest: unknown[]) => number };
}

describe('PGlite durable commits', () => {
  let dir: string;
  let db: Database;
  const walOf = (d: Database) => (d as unknown as { wal: WalFlusher }).wal;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'db-durable-'));
    db = await openDatabase({ pgliteDir: dir });
    await db.query('CREATE TABLE durable_test (id int PRIMARY KEY)');
  });
  after(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs PostgreSQL with fsync on and the log written with fdatasync', async () => {
    expect(await db.query('SHOW fsync')).to.deep.equal([{ fsync: 'on' }]);
    expect(await db.query('SHOW wal_sync_method')).to.deep.equal([{ wal_sync_method: 'fdatasync' }]);
  });

  it('flushes the log segment on sync(), once for the commits before it, and not again with nothing new', async () => {
    const wal = walOf(db);
    const before = wal.syncs;
    await db.transaction(async (tx) => void (await tx.query('INSERT INTO durable_test (id) VALUES ($1)', [1])));
    await db.query('INSERT INTO durable_test (id) VALUES ($1)', [2]);
    expect(wal.syncs, 'commits leave the flush to sync()').to.equal(before);
    await db.sync();
    expect(wal.syncs).to.equal(before + 1);
    expect(await db.query('SELECT count(*)::int AS n FROM durable_test')).to.deep.equal([{ n: 2 }]);
    await db.sync();
    expect(wal.syncs, 'nothing written since').to.equal(before + 1);
  });

  it('serves many concurrent commits with fewer flushes than commits (group commit)', async () => {
    const wal = walOf(db);
    const before = wal.syncs;
    await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        await db.transaction(async (tx) => void (await tx.query('INSERT INTO durable_test (id) VALUES ($1)', [100 + i])));
        await db.sync();
      }),
    );
    expect(wal.syncs - before).to.be.within(1, 31);
    expect(await db.query('SELECT count(*)::int AS n FROM durable_test WHERE id >= 100')).to.deep.equal([{ n: 32 }]);
  });

  it('lets a checkpoint flush the data files, pg_control and directories through the file system', async () => {
    const wal = walOf(db);
    const before = wal.fileSyncs;
    await db.query('INSERT INTO durable_test (id) VALUES ($1)', [1000]);
    await db.query('CHECKPOINT');
    expect(wal.fileSyncs - before).to.be.greaterThan(2);
  });

  it("gathers a housekeeping checkpoint's data-file flushes into one batch, made before pg_control is written", async () => {
    const dir2 = mkdtempSync(path.join(tmpdir(), 'db-gather-'));
    let small = await openDatabase({ pgliteDir: dir2, checkpointWalBytes: 1 });
    try {
      const files = (small as unknown as { files: DurableNodeFS }).files;
      // Every write PostgreSQL makes to pg_control: the batches made by then, and the flushes still waiting.
      const nodefs = (small as unknown as { db: { Module: { NODEFS: NodeFsForTest } } }).db.Module.NODEFS;
      const controlWrites: Array<{ batches: number; pending: number }> = [];
      const hooked = nodefs.stream_ops.write;
      nodefs.stream_ops.write = function (this: unknown, stream: { node: unknown }, ...rest: unknown[]) {
        const written = hooked.call(this, stream, ...rest);
        if (nodefs.realPath(stream.node).endsWith(path.join('global', 'pg_control'))) controlWrites.push({ batches: files.gatheredBatches, pending: files.pendingFlushes });
        return written;
      };
      await small.query('CREATE TABLE gathered (id int PRIMARY KEY, v text)');
      await small.query(`INSERT INTO gathered SELECT i, repeat('x', 100) FROM generate_series(1, 2000) AS i`);
      const done = await small.maintain();
      expect(done?.checkpointed).to.equal(true);
      expect(done?.checkpointMs).to.be.greaterThan(0);
      // One batch: the new table, its index, the catalogues and the commit log, at least.
      expect(files.gatheredBatches).to.equal(1);
      expect(files.gatheredFiles).to.be.at.least(3);
      // The checkpoint wrote pg_control after the batch, with nothing left waiting (PostgreSQL
      // writes it at other times too: housekeeping's VACUUM did, before the checkpoint).
      expect(controlWrites.filter((w) => w.batches === 1).length).to.be.at.least(1);
      expect(controlWrites.every((w) => w.pending === 0)).to.equal(true);
      // A CHECKPOINT that housekeeping did not start flushes one file at a time, as PostgreSQL asks.
      const writes = controlWrites.length;
      await small.query('INSERT INTO gathered VALUES (0, $1)', ['y']);
      await small.query('CHECKPOINT');
      expect(files.gatheredBatches).to.equal(1);
      expect(controlWrites.length).to.be.greaterThan(writes);
      await small.close();
      small = await openDatabase({ pgliteDir: dir2 });
      expect(await small.query('SELECT count(*)::int AS n FROM gathered')).to.deep.equal([{ n: 2001 }]);
    } finally {
      await small.close();
      rmSync(dir2, { recursive: true, force: true });
    }
  });

  it('keeps every acknowledged commit when the process is killed (-9) mid-stream', async () => {
    const crashDir = mkdtempSync(path.join(tmpdir(), 'db-crash-'));
    try {
      const script = path.join(crashDir, 'writer.mts');
      const module = new URL('../../src/db/database.ts', import.meta.url).pathname;
      writeFileSync(
        script,
        `import { openDatabase } from ${JSON.stringify(module)};
         const db = await openDatabase({ pgliteDir: ${JSON.stringify(path.join(crashDir, 'pglite'))} });
         await db.query('CREATE TABLE IF NOT EXISTS acked (id int PRIMARY KEY)');
         for (let i = 0; ; i++) {
           await db.transaction(async (tx) => void (await tx.query('INSERT INTO acked (id) VALUES ($1)', [i])));
           await db.sync();
           process.stdout.write(i + '\\n');
         }`,
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let acked = -1;
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          const lines = chunk.toString().trim().split('\n');
          acked = Number(lines[lines.length - 1]);
          if (acked >= 200 && !child.killed) child.kill('SIGKILL');
        });
        child.on('exit', () => resolve());
        child.on('error', reject);
      });
      expect(acked).to.be.at.least(200);
      const reopened = await openDatabase({ pgliteDir: path.join(crashDir, 'pglite') });
      try {
        const [{ n, top }] = await reopened.query<{ n: number; top: number }>('SELECT count(*)::int AS n, max(id) AS top FROM acked');
        expect(top).to.be.at.least(acked);
        expect(n).to.equal(top + 1);
      } finally {
        await reopened.close();
      }
    } finally {
      rmSync(crashDir, { recursive: true, force: true });
    }
  }).timeout(120_000);
});
