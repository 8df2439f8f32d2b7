/**
 * The audit trail on PGlite and PostgreSQL: appends ride the caller's transaction, the
 * chain stays linear under concurrency, and verify names each kind of tampering done
 * behind the gateway's back (edited, deleted, inserted, reordered, rewritten chain).
 */
import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { openDatabase, type Database } from '../../src/db/database.js';
import { AuditLog, recordHash } from '../../src/audit/log.js';
import { canonicalJson } from '../../src/audit/canonical.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { DATABASE_KINDS } from '../helpers/gateway.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

describe('canonical JSON', () => {
  it('sorts keys at every depth, drops undefined and writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, 'x', null], c: true }, u: undefined })).to.equal('{"a":{"c":true,"d":[1,"x",null]},"b":1}');
    expect(() => canonicalJson({ n: Number.NaN })).to.throw(/NaN/);
  });
});

for (const kind of DATABASE_KINDS) {
  describe(`audit trail on ${kind}`, function () {
    this.timeout(60_000);
    let db: Database;
    let dir: string;
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    let audit: AuditLog;
    let dbUrl = '';

    beforeEach(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'audit-'));
      dbUrl = kind === 'postgres' ? await createTestDatabase() : '';
      db = await openDatabase({ url: dbUrl || undefined, pgliteDir: path.join(dir, 'pglite') });
      audit = new AuditLog(db, { checkpointKey: key, checkpointEvery: 5 });
    });
    afterEach(async () => {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    });

    async function fill(n: number): Promise<void> {
      for (let i = 1; i <= n; i++) await audit.appendNow({ action: 'push', repository: 'team/app', digest: `sha256:${String(i).padStart(64, '0')}`, principal: 'alice', detail: { n: i } });
    }

    it('writes nothing when the caller\'s transaction rolls back', async () => {
      await fill(1);
      await db
        .transaction(async (tx) => {
          await audit.append(tx, { action: 'commit', repository: 'team/app' });
          throw new Error('the state change failed');
        })
        .catch(() => undefined);
      expect(await audit.query({ limit: 10 })).to.have.length(1);
      expect((await audit.verify()).ok).to.equal(true);
    });

    it('chains the next append to the committed head after a rollback between appends', async () => {
      await fill(2);
      await db
        .transaction(async (tx) => {
          await audit.append(tx, { action: 'commit', repository: 'team/app' });
          await audit.append(tx, { action: 'commit', repository: 'team/app' });
          throw new Error('the state change failed');
        })
        .catch(() => undefined);
      await db.transaction(async (tx) => {
        await audit.append(tx, { action: 'push', repository: 'team/app' });
      });
      const records = await audit.query({ limit: 10 });
      expect(records.map((r) => [r.seq, r.action])).to.deep.equal([[1, 'push'], [2, 'push'], [3, 'push']]);
      expect(records[2].prevHash).to.equal(records[1].hash);
      expect((await audit.verify()).problems).to.deep.equal([]);
    });

    it('records details holding U+0000 (a package name read from an image) with U+FFFD, and the chain verifies', async () => {
      const record = await audit.appendNow({ action: 'admission.decision', repository: 'team/app', detail: { packages: ['libc\u0000'] } });
      expect(record.detail).to.deep.equal({ packages: ['libc\uFFFD'] });
      const [stored] = await audit.query({ limit: 1 });
      expect(stored.detail).to.deep.equal({ packages: ['libc\uFFFD'] });
      expect(recordHash(stored)).to.equal(stored.hash);
      expect((await audit.verify()).problems).to.deep.equal([]);
    });

    it('hashes non-ASCII text, backslashes, quotes and newlines the same way the verifier does', async () => {
      const detail = { s: 'café ☃ 𝄞 \\ "q" \n\t end', 'ключ': ['ü', "it's"] };
      const record = await audit.appendNow({ action: 'push', repository: 'team/app', principal: 'zoë', detail });
      const [stored] = await audit.query({ limit: 1 });
      expect(stored.detail).to.deep.equal(detail);
      expect(stored.hash).to.equal(record.hash);
      expect(recordHash(stored)).to.equal(stored.hash);
      expect((await audit.verify()).problems).to.deep.equal([]);
    });

    // PostgreSQL only: PGlite appends are hashed by the gateway alone.
    if (kind === 'postgres') it('fails the append, and writes nothing, when the database hashes a record differently', async () => {
      await fill(2);
      // A server-side hash that differs from the gateway's (as a wrong text encoding would).
      const [fn] = await db.query<{ body: string }>(`SELECT pg_get_functiondef('audit_append'::regproc) AS body`);
      await db.query(fn.body.replace("E'\\n' || p_content", "E'\\n' || p_content || ' '"));
      const failed = await db.transaction((tx) => audit.append(tx, { action: 'push', repository: 'team/app' })).then(() => null, (err: Error) => err);
      expect(failed?.message).to.match(/^audit record 3: the database hashed it differently/);
      expect((await audit.query({ limit: 10 })).map((r) => r.seq)).to.deep.equal([1, 2]);
      await db.query(fn.body);
      await fill(1);
      expect((await audit.verify()).problems).to.deep.equal([]);
    });

    it('keeps one linear chain under concurrent appends', async () => {
      await Promise.all(Array.from({ length: 40 }, (_, i) => audit.appendNow({ action: 'auth.failure', principal: `p${i}`, detail: { i } })));
      const report = await audit.verify();
      expect(report.problems).to.deep.equal([]);
      expect(report.checked).to.equal(40);
      expect(report.checkpoints).to.equal(8);
      const records = await audit.query({ limit: 100 });
      expect(records.map((r) => r.seq)).to.deep.equal(Array.from({ length: 40 }, (_, i) => i + 1));
      expect(records[5].prevHash).to.equal(records[4].hash);
      expect(recordHash(records[7])).to.equal(records[7].hash);
    });

    it('filters by repository, digest, principal, action and time, and exports JSON Lines in order', async () => {
      await fill(3);
      await audit.appendNow({ action: 'auth.failure', principal: 'mallory' });
      expect(await audit.query({ principal: 'mallory', limit: 10 })).to.have.length(1);
      expect(await audit.query({ action: 'push', repository: 'team/app', limit: 10 })).to.have.length(3);
      expect(await audit.query({ digest: `sha256:${'2'.padStart(64, '0')}`, limit: 10 })).to.have.length(1);
      expect(await audit.query({ since: new Date(Date.now() + 60_000), limit: 10 })).to.have.length(0);
      expect(await audit.query({ since: new Date(Date.now() - 60_000), until: new Date(Date.now() + 60_000), limit: 10 })).to.have.length(4);
      expect(await audit.query({ until: new Date(Date.now() - 60_000), limit: 10 })).to.have.length(0);
      expect(await audit.query({ action: 'push', since: new Date(Date.now() - 60_000), limit: 2 })).to.have.length(2);
      const chunks: string[] = [];
      const out = new Writable({ write: (chunk, _enc, cb) => (chunks.push(String(chunk)), cb()) });
      expect(await audit.export(out)).to.equal(4);
      const lines = chunks.join('').trim().split('\n').map((l) => JSON.parse(l) as { seq: number });
      expect(lines.map((l) => l.seq)).to.deep.equal([1, 2, 3, 4]);
    });

    it('names an edited record', async () => {
      await fill(8);
      await db.query(`UPDATE audit_log SET detail = '{"n": 99}' WHERE seq = 3`);
      const report = await audit.verify();
      expect(report.ok).to.equal(false);
      expect(report.problems).to.deep.include({ seq: 3, kind: 'edited', message: 'record 3 was edited: its content no longer matches its hash' });
    });

    it('names a deleted record', async () => {
      await fill(8);
      await db.query('DELETE FROM audit_log WHERE seq = 6');
      const report = await audit.verify();
      expect(report.problems.map((p) => [p.seq, p.kind])).to.deep.include([7, 'deleted']);
    });

    it('names an inserted record, even one chained properly to its predecessor', async () => {
      await fill(8);
      const [four] = await audit.query({ after: 3, limit: 1 });
      // Make room at seq 5 and insert a forged record that chains to record 4.
      await db.query('UPDATE audit_log SET seq = seq + 100 WHERE seq >= 5');
      await db.query('UPDATE audit_log SET seq = seq - 99 WHERE seq >= 105');
      const forged = { at: new Date().toISOString(), action: 'commit', repository: 'team/app', digest: null, principal: 'mallory', requestId: null, detail: {}, prevHash: four.hash };
      await db.query(
        `INSERT INTO audit_log (seq, at, action, repository, digest, principal, request_id, detail, prev_hash, hash) VALUES (5, $1, $2, $3, NULL, $4, NULL, '{}', $5, $6)`,
        [forged.at, forged.action, forged.repository, forged.principal, forged.prevHash, recordHash(forged)],
      );
      const report = await audit.verify();
      expect(report.problems.map((p) => [p.seq, p.kind])).to.deep.include([5, 'inserted']);
    });

    it('gateway audit verify and export work from the command line, with exit codes', async () => {
      await fill(4);
      const config = path.join(dir, 'gateway.json');
      writeFileSync(config, JSON.stringify({ storage: { root: dir }, database: { url: kind === 'postgres' ? dbUrl : '' } }));
      const run = async (args: string[]) => {
        if (kind === 'pglite') await db.close(); // one process at a time on a PGlite directory
        const result = await new Promise<{ code: number; out: string }>((resolve) => {
          execFile(process.execPath, ['--import', 'tsx', MAIN, 'audit', ...args, '--config', config], (err, stdout) =>
            resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout }),
          );
        });
        if (kind === 'pglite') {
          db = await openDatabase({ pgliteDir: path.join(dir, 'pglite') });
          audit = new AuditLog(db);
        }
        return result;
      };
      const clean = await run(['verify']);
      expect(clean).to.deep.include({ code: 0 });
      expect(clean.out).to.match(/audit trail intact: 4 records/);
      const exported = await run(['export']);
      expect(exported.out.trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq)).to.deep.equal([1, 2, 3, 4]);
      await db.query(`UPDATE audit_log SET principal = 'mallory' WHERE seq = 2`);
      const broken = await run(['verify']);
      expect(broken.code).to.equal(2);
      expect(broken.out).to.include('record 2: edited: record 2 was edited');
    });

    it('names records stored out of order', async () => {
      await fill(8);
      await db.query('UPDATE audit_log SET seq = 1000 WHERE seq = 3');
      await db.query('UPDATE audit_log SET seq = 3 WHERE seq = 4');
      await db.query('UPDATE audit_log SET seq = 4 WHERE seq = 1000');
      const kinds = (await audit.verify()).problems.map((p) => [p.seq, p.kind]);
      expect(kinds).to.deep.include([3, 'reordered']);
    });

    it('catches a chain rewritten end to end through its signed checkpoints', async () => {
      await fill(6);
      // Rewrite record 2 and re-hash every record after it: the chain alone looks intact.
      const records = await audit.query({ limit: 100 });
      records[1].detail = { n: 'forged' };
      for (let i = 1; i < records.length; i++) {
        records[i].prevHash = records[i - 1].hash;
        const { seq: _s, hash: _h, ...content } = records[i];
        records[i].hash = recordHash(content);
        await db.query('UPDATE audit_log SET detail = $2, prev_hash = $3, hash = $4 WHERE seq = $1', [records[i].seq, JSON.stringify(records[i].detail), records[i].prevHash, records[i].hash]);
      }
      const report = await audit.verify();
      expect(report.problems).to.deep.include({ seq: 5, kind: 'checkpoint', message: 'the chain was rewritten: record 5 no longer has the hash its signed checkpoint pins' });
      // And a checkpoint checked against another key than the one that signed it is reported.
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
      await db.query('UPDATE audit_checkpoints SET hash = $1 WHERE seq = 5', [records[4].hash]);
      const withKey = await audit.verify({}, other);
      expect(withKey.problems.map((p) => [p.seq, p.kind])).to.deep.include([5, 'checkpoint']);
      expect(withKey.problems.find((p) => p.kind === 'checkpoint')!.message).to.include('not signed by the trusted key');
    });
  });
}
