/** The metadata store, run unchanged against PGlite and a real PostgreSQL server. */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { migrate, openDatabase, type Database, type Queryable } from '../../src/db/database.js';
import { AdmissionStore } from '../../src/db/admissions.js';
import { MetadataStore } from '../../src/db/metadata.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { DATABASE_KINDS } from '../helpers/gateway.js';
import { eventually } from '../helpers/wait.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

for (const kind of DATABASE_KINDS) {
  describe(`metadata store on ${kind}`, () => {
    let db: Database;
    let meta: MetadataStore;
    let dir: string;

    before(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'meta-'));
      db = await openDatabase({ url: kind === 'postgres' ? await createTestDatabase() : undefined, pgliteDir: dir });
      meta = new MetadataStore(db);
    });
    after(async () => {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('applies migrations once', async () => {
      expect(await migrate(db)).to.deep.equal([]);
      const rows = await db.query<{ version: string }>('SELECT version FROM schema_migrations');
      expect(rows.map((r) => r.version)).to.include('001_registry');
    });

    it('tracks an upload size with compare-and-set', async () => {
      const id = randomUUID();
      await meta.createUpload(id, 'a/repo');
      expect(await meta.advanceUpload(id, 0, 10)).to.equal(true);
      expect(await meta.advanceUpload(id, 0, 20)).to.equal(false);
      const upload = await meta.getUpload(id);
      expect(upload).to.include({ repository: 'a/repo', size: 10 });
      expect(typeof upload!.size).to.equal('number');
      expect(await meta.deleteUpload(id)).to.equal(true);
      expect(await meta.getUpload(id)).to.equal(null);
    });

    it('finishes an upload by ending the session and linking its content in one step, once', async () => {
      const id = randomUUID();
      await meta.createUpload(id, 'a/finish');
      expect(await meta.advanceUpload(id, 0, 4)).to.equal(true);
      // Only at the size the finishing request read: another writer may have moved it since.
      expect(await meta.finishUpload(id, d('f'), 9, 0)).to.equal(false);
      expect(await meta.getUpload(id)).to.include({ size: 4 });
      expect(await meta.getBlob(d('f'))).to.equal(null);
      expect(await meta.finishUpload(id, d('f'), 9, 4)).to.equal(true);
      expect(await meta.getUpload(id)).to.equal(null);
      expect(await meta.findBlob('a/finish', d('f'))).to.deep.include({ size: 9, state: 'staged', inline: false });
      // A session that is gone (finished, or cancelled meanwhile) links nothing.
      expect(await meta.finishUpload(id, d('g'), 9, 4)).to.equal(false);
      expect(await meta.getBlob(d('g'))).to.equal(null);
    });

    it('names the upload whose flush is pending, clears it only for that upload, and forgets content only for it', async () => {
      const finish = async (repo: string, digest: string) => {
        const id = randomUUID();
        await meta.createUpload(id, repo);
        expect(await meta.finishUpload(id, digest, 7, 0, null, db, true)).to.equal(true);
        return id;
      };
      const first = await finish('a/flush', d('7'));
      expect(await meta.findBlob('a/flush', d('7'))).to.deep.include({ flushPending: first });
      // A second upload that replaced the file: the first one's flush no longer clears the record.
      const second = await finish('a/flush-too', d('7'));
      await meta.markFlushed([{ digest: d('7'), upload: first }]);
      expect(await meta.findBlob('a/flush', d('7'))).to.deep.include({ flushPending: second });
      expect((await meta.unflushedBlobs()).map((b) => [b.digest, b.flushPending])).to.deep.include([d('7'), second]);
      expect(await meta.forgetUnflushedBlob(d('7'), first)).to.equal(false);
      await meta.markFlushed([{ digest: d('7'), upload: second }]);
      expect(await meta.findBlob('a/flush', d('7'))).to.deep.include({ flushPending: null });
      expect((await meta.unflushedBlobs()).map((b) => b.digest)).to.not.include(d('7'));
      // An upload whose bytes were flushed before its record (storage.blobFlush=upload) leaves nothing pending.
      const id = randomUUID();
      await meta.createUpload(id, 'a/flush');
      expect(await meta.finishUpload(id, d('7'), 7, 0)).to.equal(true);
      expect(await meta.findBlob('a/flush', d('7'))).to.deep.include({ flushPending: null });
      // Forgetting takes the record and every link, for the upload still pending only.
      const lost = await finish('a/flush', d('8'));
      await finish('a/flush-too', d('8')).then((upload) => meta.markFlushed([{ digest: d('8'), upload }]));
      await db.query('UPDATE blobs SET flush_pending = $2 WHERE digest = $1', [d('8'), lost]);
      expect(await meta.forgetUnflushedBlob(d('8'), lost)).to.equal(true);
      expect(await meta.getBlob(d('8'))).to.equal(null);
      expect(await meta.findBlob('a/flush', d('8'))).to.equal(null);
      expect(await meta.findBlob('a/flush-too', d('8'))).to.equal(null);
    });

    it("keeps a small blob's bytes in its content row, and gives them to a row that has none", async () => {
      const finish = async (repo: string, digest: string, body: Buffer | null) => {
        const id = randomUUID();
        await meta.createUpload(id, repo);
        return meta.finishUpload(id, digest, 3, 0, body);
      };
      expect(await finish('a/inline', d('i'), Buffer.from([0, 1, 255]))).to.equal(true);
      expect(await meta.findBlob('a/inline', d('i'))).to.deep.include({ size: 3, state: 'staged', inline: true });
      expect([...(await meta.inlineBody(d('i')))!]).to.deep.equal([0, 1, 255]);
      // Content recorded already keeps its bytes: another repository's upload only links it.
      expect(await finish('a/inline2', d('i'), Buffer.from('new'))).to.equal(true);
      expect([...(await meta.inlineBody(d('i')))!]).to.deep.equal([0, 1, 255]);
      expect(await meta.findBlob('a/inline2', d('i'))).to.deep.include({ inline: true });
      // A row whose bytes are a file takes them when the caller found that file gone; without bytes nothing changes.
      expect(await finish('a/inline', d('j'), null)).to.equal(true);
      expect(await finish('a/inline', d('j'), null)).to.equal(true);
      expect(await meta.getBlob(d('j'))).to.deep.include({ inline: false });
      expect(await finish('a/inline', d('j'), Buffer.from('abc'))).to.equal(true);
      expect((await meta.inlineBody(d('j')))!.toString()).to.equal('abc');
    });

    it('links content with its bytes in its row when given them, and gives them to a row that has none', async () => {
      await meta.linkBlob('a/link', d('k'), 2, undefined, Buffer.from('{}'));
      expect(await meta.findBlob('a/link', d('k'))).to.deep.include({ size: 2, state: 'staged', inline: true });
      expect((await meta.inlineBody(d('k')))!.toString()).to.equal('{}');
      await meta.linkBlob('a/link2', d('k'), 2);
      expect((await meta.inlineBody(d('k')))!.toString()).to.equal('{}');
      await meta.linkBlob('a/link', d('n'), 2);
      expect(await meta.getBlob(d('n'))).to.deep.include({ inline: false });
      await meta.linkBlob('a/link2', d('n'), 2, undefined, Buffer.from('[]'));
      expect((await meta.inlineBody(d('n')))!.toString()).to.equal('[]');
    });

    it('scopes blobs to the repositories that link them', async () => {
      await meta.linkBlob('a/one', d('1'), 5);
      expect(await meta.findBlob('a/one', d('1'))).to.deep.equal({ digest: d('1'), size: 5, state: 'staged', inline: false, committedInRepository: false, flushPending: null });
      expect(await meta.findBlob('a/two', d('1'))).to.equal(null);
      expect(await meta.unlinkBlob('a/one', d('1'))).to.equal(true);
      expect(await meta.findBlob('a/one', d('1'))).to.equal(null);
    });

    it('stores manifests staged and switches them, their content and tags in one commit', async () => {
      await meta.linkBlob('b/app', d('c'), 2);
      await meta.linkBlob('b/app', d('l'), 3);
      // Bytes of every value, as bytea must keep them.
      const body = Buffer.from([...Buffer.from('{"schemaVersion":2}'), 0, 0x5c, 0x27, 0xff, 0x80]);
      const manifest = {
        digest: d('m'),
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        size: 100,
        artifactType: null,
        subjectDigest: null,
        annotations: { a: 'b' },
        references: [
          { digest: d('c'), kind: 'config' as const },
          { digest: d('l'), kind: 'layer' as const },
        ],
        body,
      };
      expect(await meta.putManifest('b/app', manifest)).to.deep.equal({ created: true, content: 'inline' });
      expect(await meta.putManifest('b/app', manifest)).to.deep.equal({ created: false, content: 'inline' });
      expect((await meta.inlineBody(d('m')))!.equals(body)).to.equal(true);
      expect(await meta.inlineBody(d('l'))).to.equal(null);
      expect(await meta.contentLocations([d('m'), d('l'), d('x')])).to.deep.equal(new Map([[d('m'), 'inline'], [d('l'), 'staged']]));
      expect((await meta.getManifest('b/app', d('m')))!.state).to.equal('staged');
      expect(await meta.getManifestByTag('b/app', 'v1')).to.equal(null);
      await meta.commitManifest('b/app', d('m'), [d('c'), d('l')], ['v1', 'latest']);
      const byTag = await meta.getManifestByTag('b/app', 'v1');
      expect(byTag).to.include({ digest: d('m'), state: 'committed', size: 100 });
      expect(byTag!.annotations).to.deep.equal({ a: 'b' });
      expect((await meta.getBlob(d('l')))!.state).to.equal('committed');
      expect(await meta.getBlob(d('m'))).to.deep.include({ state: 'committed', inline: true });
      expect((await meta.findBlob('b/app', d('l')))!.committedInRepository).to.equal(true);
      expect(await meta.listTags('b/app', undefined, 10)).to.deep.equal(['latest', 'v1']);
    });

    it('stores an admitted manifest committed in one step, or keeps nothing when it is not new or its bytes are a staged file', async () => {
      const none = async () => undefined;
      await meta.linkBlob('b/direct', d('0'), 2);
      await meta.linkBlob('b/direct', d('h'), 3);
      const manifest = {
        digest: d('y'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 7, artifactType: null, subjectDigest: null, annotations: null,
        references: [{ digest: d('0'), kind: 'config' as const }, { digest: d('h'), kind: 'layer' as const }],
        body: Buffer.from('{"x":1}'),
      };
      // A pending push of the tag that this admitted push supersedes.
      await meta.putManifest('b/direct', { ...manifest, digest: d('z'), body: Buffer.from('{"x":2}') }, ['v1']);
      expect((await meta.getManifestByTag('b/direct', 'v1', true))!.digest).to.equal(d('z'));
      const order: string[] = [];
      const hooks = { beforeStore: async () => void order.push('before'), inTransaction: async () => void order.push('after') };
      expect(await meta.putAdmittedManifest('b/direct', manifest, [d('0'), d('h')], ['v1', 'latest'], hooks)).to.equal(true);
      expect(order).to.deep.equal(['before', 'after']);
      expect(await meta.getManifestByTag('b/direct', 'v1', true)).to.include({ digest: d('y'), state: 'committed' });
      expect(await meta.listTags('b/direct', undefined, 10, false)).to.deep.equal(['latest', 'v1']);
      expect(await meta.getBlob(d('y'))).to.deep.include({ state: 'committed', inline: true });
      for (const blob of [d('0'), d('h')]) {
        expect((await meta.getBlob(blob))!.state).to.equal('committed');
        expect((await meta.findBlob('b/direct', blob))!.committedInRepository).to.equal(true);
      }
      expect((await meta.findBlob('b/direct', d('y')))!.committedInRepository).to.equal(true);
      // Not new in the repository: nothing is written, the hooks after the statement do not run.
      order.length = 0;
      expect(await meta.putAdmittedManifest('b/direct', manifest, [], ['other'], hooks)).to.equal(false);
      expect(order).to.deep.equal(['before']);
      expect(await meta.listTags('b/direct', undefined, 10, true)).to.deep.equal(['latest', 'v1']);
      // Bytes that are a staged file (stored before manifests were kept in the database) are left to the usual commit, which moves them.
      await meta.linkBlob('b/filed', d('9'), 9);
      const filed = { ...manifest, digest: d('9'), size: 9, references: [], body: Buffer.from('{"y":12345}') };
      expect(await meta.putAdmittedManifest('b/filed', filed, [], ['v1'], { beforeStore: none, inTransaction: none })).to.equal(false);
      expect(await meta.getManifest('b/filed', d('9'))).to.equal(null);
      expect(await meta.getBlob(d('9'))).to.deep.include({ state: 'staged', inline: false });
      // A hook that throws rolls all of it back.
      const failing = { beforeStore: none, inTransaction: async () => { throw new Error('audit unavailable'); } };
      const fresh = { ...manifest, digest: d('d'), body: Buffer.from('{"x":6}') };
      let error: Error | null = null;
      await meta.putAdmittedManifest('b/direct', fresh, [], ['v6'], failing).catch((err: Error) => (error = err));
      expect(error).to.have.property('message', 'audit unavailable');
      expect(await meta.getManifest('b/direct', d('d'))).to.equal(null);
      expect(await meta.getBlob(d('d'))).to.equal(null);
      expect(await meta.listTags('b/direct', undefined, 10, true)).to.deep.equal(['latest', 'v1']);
    });

    it('lists tags in byte order with last and limit', async () => {
      await meta.putManifest('c/tags', {
        digest: d('t'), mediaType: 'application/vnd.oci.image.index.v1+json', size: 1,
        artifactType: null, subjectDigest: null, annotations: null, references: [],
      });
      await meta.commitManifest('c/tags', d('t'), [], ['b', 'B', 'a', 'a1', '_x']);
      expect(await meta.listTags('c/tags', undefined, 10)).to.deep.equal(['B', '_x', 'a', 'a1', 'b']);
      expect(await meta.listTags('c/tags', 'a', 2)).to.deep.equal(['a1', 'b']);
    });

    it('lists tags as they change: pending to pushers only, committed to all, deleted to none', async () => {
      const listings = async () => [await meta.listTags('c/tags', undefined, 10, true), await meta.listTags('c/tags', undefined, 10, false)];
      const before = ['B', '_x', 'a', 'a1', 'b'];
      expect(await listings()).to.deep.equal([before, before]);
      const manifest = { digest: d('u'), mediaType: 'application/vnd.oci.image.index.v1+json', size: 1, artifactType: null, subjectDigest: null, annotations: null, references: [] };
      await meta.putManifest('c/tags', manifest, ['c']);
      expect(await listings()).to.deep.equal([[...before, 'c'], before]);
      await meta.commitManifest('c/tags', d('u'), [], ['c']);
      expect(await listings()).to.deep.equal([[...before, 'c'], [...before, 'c']]);
      expect(await meta.deleteTag('c/tags', 'c')).to.equal(true);
      expect(await listings()).to.deep.equal([before, before]);
    });

    it('finds referrers by subject', async () => {
      await meta.putManifest('d/ref', {
        digest: d('r'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 7,
        artifactType: 'application/vnd.example', subjectDigest: d('s'), annotations: null, references: [],
      });
      const refs = await meta.listReferrers('d/ref', d('s'));
      expect(refs.map((r) => r.digest)).to.deep.equal([d('r')]);
      expect(refs[0].artifactType).to.equal('application/vnd.example');
      expect(await meta.listReferrers('d/other', d('s'))).to.deep.equal([]);
    });

    it('deletes a manifest with every tag that points at it', async () => {
      expect(await meta.deleteManifest('b/app', d('m'))).to.equal(true);
      expect(await meta.getManifestByTag('b/app', 'latest')).to.equal(null);
      expect(await meta.listTags('b/app', undefined, 10)).to.deep.equal([]);
      expect(await meta.deleteManifest('b/app', d('m'))).to.equal(false);
    });

    it("finds a deleted manifest's tags by index, not by walking the repository's tags", async () => {
      // The lookup the foreign key's cascade makes. Sequential scans are refused so that the
      // plan shows which index serves it (these test tables are too small to need one).
      const plan = await db.transaction(async (tx) => {
        await tx.query('SET LOCAL enable_seqscan = off');
        const rows = await tx.query<{ 'QUERY PLAN': string }>('EXPLAIN SELECT 1 FROM tags WHERE repository_id = 1 AND manifest_digest = $1', [d('m')]);
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      });
      expect(plan).to.match(/Scan (using|on) tags_manifest\b/);
    });

    it('creates a repository once under concurrent first pushes', async () => {
      const ids = await Promise.all(Array.from({ length: 8 }, () => meta.ensureRepository('e/race')));
      expect(new Set(ids).size).to.equal(1);
    });

    // Only a server runs transactions side by side; PGlite runs one at a time.
    if (kind === 'postgres') {
      /**
       * Holds the row of `table` for `low` locked while `flip` runs on a plan that visits rows
       * in table order (the row for `high` was inserted first): the flip must wait for `low`
       * before it has taken `high`, as any flip that locks in digest order does.
       */
      async function expectLockedInDigestOrder(table: string, low: string, high: string, flip: (tx: Queryable) => Promise<unknown>): Promise<void> {
        await expectLockedInDigestOrderBy(table, low, high, (planBadly) => db.transaction(async (tx) => {
          await planBadly(tx);
          return flip(tx);
        }));
      }

      /** expectLockedInDigestOrder for a statement that opens its own transaction: `run` calls `planBadly` in it first. */
      async function expectLockedInDigestOrderBy(table: string, low: string, high: string, run: (planBadly: (tx: Queryable) => Promise<void>) => Promise<unknown>): Promise<void> {
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        let locked!: () => void;
        const lowLocked = new Promise<void>((resolve) => (locked = resolve));
        const holder = db.transaction(async (tx) => {
          await tx.query(`SELECT 1 FROM ${table} WHERE digest = $1 FOR UPDATE`, [low]);
          locked();
          await held;
        });
        await lowLocked;
        const flipped = run(async (tx) => {
          await tx.query('SET LOCAL enable_indexscan = off');
          await tx.query('SET LOCAL enable_bitmapscan = off');
        });
        try {
          const waiting = async () => (await db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
          ))[0]!.n === 1;
          await eventually(waiting, `the ${table} statement to wait for the lower digest's row`);
          await db.transaction((tx) => tx.query(`SELECT 1 FROM ${table} WHERE digest = $1 FOR UPDATE NOWAIT`, [high]));
        } finally {
          release();
          await holder;
        }
        await flipped;
      }

      // Digests new to the database for each table, so that the rows are where these inserts put them.
      for (const [table, [low, high, image]] of [['blobs', ['4', '5', '6']], ['repository_blobs', ['a', 'b', 'e']]] as const) {
        it(`locks the ${table} rows a commit switches in digest order, whatever the plan (concurrent commits of images sharing layers cannot deadlock)`, async () => {
          const repo = `f/order-${table}`;
          await meta.linkBlob(repo, d(high), 2);
          await meta.linkBlob(repo, d(low), 2);
          const manifest = {
            digest: d(image), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, artifactType: null,
            subjectDigest: null, annotations: null,
            references: [{ digest: d(high), kind: 'config' as const }, { digest: d(low), kind: 'layer' as const }],
          };
          await meta.putManifest(repo, manifest);
          await expectLockedInDigestOrder(table, d(low), d(high), (tx) => meta.commitManifests(tx, repo, [{ digest: manifest.digest, contentDigests: [d(high), d(low)] }]));
          expect((await meta.getBlob(d(low)))!.state).to.equal('committed');
          expect((await meta.findBlob(repo, d(high)))!.committedInRepository).to.equal(true);
        });
      }

      // Digests no other test uses, so that the rows are where these inserts put them.
      const fresh = (prefix: string) => `sha256:${prefix.padEnd(64, '0')}`;
      for (const [table, [low, high, image]] of [['blobs', ['e1', 'e2', 'e3']], ['repository_blobs', ['e4', 'e5', 'e6']]] as const) {
        it(`locks the ${table} rows the direct store of an admitted manifest switches in digest order, whatever the plan`, async () => {
          const repo = `f/direct-order-${table}`;
          await meta.linkBlob(repo, fresh(high), 2);
          await meta.linkBlob(repo, fresh(low), 2);
          const manifest = {
            digest: fresh(image), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, artifactType: null,
            subjectDigest: null, annotations: null, body: Buffer.from('{}'),
            references: [{ digest: fresh(high), kind: 'config' as const }, { digest: fresh(low), kind: 'layer' as const }],
          };
          const stored = expectLockedInDigestOrderBy(table, fresh(low), fresh(high), (planBadly) =>
            meta.putAdmittedManifest(repo, manifest, [fresh(high), fresh(low)], ['v1'], { beforeStore: planBadly, inTransaction: async () => undefined }),
          );
          await stored;
          expect((await meta.getBlob(fresh(low)))!.state).to.equal('committed');
          expect((await meta.findBlob(repo, fresh(high)))!.committedInRepository).to.equal(true);
          expect(await meta.getManifestByTag(repo, 'v1')).to.include({ digest: fresh(image), state: 'committed' });
        });
      }

      it('marks flushed blobs in digest order, whatever the plan (a batch of layers marked while a commit naming them runs cannot deadlock)', async () => {
        const finish = async (digest: string) => {
          const id = randomUUID();
          await meta.createUpload(id, 'f/order-flushed');
          expect(await meta.finishUpload(id, digest, 7, 0, null, db, true)).to.equal(true);
          return id;
        };
        const high = await finish(d('w'));
        const low = await finish(d('v'));
        await expectLockedInDigestOrder('blobs', d('v'), d('w'), (tx) => meta.markFlushed([{ digest: d('w'), upload: high }, { digest: d('v'), upload: low }], tx));
        expect(await meta.findBlob('f/order-flushed', d('v'))).to.deep.include({ flushPending: null });
        expect(await meta.findBlob('f/order-flushed', d('w'))).to.deep.include({ flushPending: null });
      });

      it('admits the children of an index in digest order, whatever the plan (indexes sharing children cannot deadlock)', async () => {
        const admissions = new AdmissionStore(db);
        const repoId = await meta.ensureRepository('f/order-admissions');
        const subject = (digest: string) => ({ repository: 'f/order-admissions', digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: [], pushedBy: null });
        await db.transaction((tx) => admissions.open(tx, repoId, subject(d('q'))));
        await db.transaction((tx) => admissions.open(tx, repoId, subject(d('p'))));
        let admitted: string[] = [];
        await expectLockedInDigestOrder('admissions', d('p'), d('q'), async (tx) => {
          admitted = await admissions.admitWith(tx, repoId, [d('q'), d('p')], d('o'));
        });
        expect(admitted.sort()).to.deep.equal([d('p'), d('q')]);
        expect((await admissions.get('f/order-admissions', d('q')))!.state).to.equal('admitted');
      });
    }
  });
}
