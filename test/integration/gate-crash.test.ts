/**
 * Invariant 2 under real crashes: the gateway runs as a child process that kills itself
 * (SIGKILL) at each step of a commit — after the blobs moved, after the manifest bytes
 * moved, inside the switch transaction. After a restart on the same data, nothing of the
 * image is visible to a reader, the audit trail verifies, and pushing again admits it. Both
 * paths of a push are crashed: decided before it is stored (a policy of manifest rules: the
 * push is one transaction, so nothing of it stays) and stored staged, then decided (a policy
 * that reads evidence: the pusher still reads its quarantined image).
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { upsertHtpasswdUser } from '../../src/auth/htpasswd.js';
import { openDatabase } from '../../src/db/database.js';
import { AuditLog } from '../../src/audit/log.js';
import { createTestDatabase, freePort } from '../helpers/postgres.js';
import { DATABASE_KINDS } from '../helpers/gateway.js';
import { basic, PASSWORDS } from '../helpers/auth.js';
import { fileBlob, OCI_MANIFEST, OciClient, sha256 } from '../helpers/oci.js';
import type { Failpoint } from '../../src/admission/failpoints.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const DEFAULT_POLICY = fileURLToPath(new URL('../../policies/default.json', import.meta.url));
const FAILPOINTS: Failpoint[] = ['commit:after-blobs', 'commit:after-manifests', 'commit:before-switch'];

interface Child {
  process: ChildProcess;
  url: string;
  exited: Promise<NodeJS.Signals | number | null>;
}

async function startChild(configFile: string, failpoints: string): Promise<Child> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--config', configFile], {
    env: { ...process.env, GATEWAY_HTTP_ADDR: `127.0.0.1:${port}`, GATEWAY_FAILPOINTS: failpoints, GATEWAY_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await fetch(`${url}/healthz`).then((r) => r.ok).catch(() => false);
    if (up) return { process: child, url, exited };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`gateway did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function contentPath(root: string, area: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return path.join(root, area, alg, hex.slice(0, 2), hex);
}

for (const kind of DATABASE_KINDS) {
  describe(`a gateway killed in the middle of a commit (${kind})`, function () {
    this.timeout(120_000);
    let root: string;
    let configFile: string;
    let databaseUrl = '';

    before(async () => {
      root = mkdtempSync(path.join(tmpdir(), 'gate-crash-'));
      databaseUrl = kind === 'postgres' ? await createTestDatabase() : '';
      const htpasswd = path.join(root, 'htpasswd');
      for (const user of ['alice', 'reader'] as const) await upsertHtpasswdUser(htpasswd, user, PASSWORDS[user]);
      // The shipped default (manifest rules: decided before the push is stored), and a warn policy
      // whose licence rule reads evidence (stored staged, then decided) for team/usual/**.
      const policies = path.join(root, 'policies');
      mkdirSync(policies);
      copyFileSync(DEFAULT_POLICY, path.join(policies, 'default.json'));
      writeFileSync(path.join(policies, 'usual.json'), JSON.stringify({
        name: 'usual', repositories: ['team/usual/**'], mode: 'warn', rules: [{ id: 'licences', type: 'licenses', deny: ['GPL-3.0-only'] }],
      }));
      configFile = path.join(root, 'gateway.json');
      writeFileSync(configFile, JSON.stringify({
        policy: { dir: policies },
        storage: { root: path.join(root, 'data') },
        database: { url: databaseUrl },
        auth: {
          htpasswd,
          rules: [
            { subjects: ['user:alice'], repositories: ['team/**'], actions: ['push'] },
            { subjects: ['user:reader'], repositories: ['team/**'], actions: ['pull'] },
          ],
        },
      }));
    });
    after(() => rmSync(root, { recursive: true, force: true }));

    it('hashes again at the next start a blob whose flush a crash cut off: kept when whole, forgotten when not', async () => {
      const repo = 'team/crash-flush';
      const data = path.join(root, 'data');
      for (const cut of [false, true]) {
        const victim = await startChild(configFile, 'blob:before-flush');
        const alice = new OciClient(victim.url).as(basic('alice', PASSWORDS.alice));
        const layer = fileBlob(`a layer whose flush a crash cut off (${cut ? 'cut' : 'whole'})`);
        const put = await alice.pushBlob(repo, layer).then(() => 'answered', (err: Error) => err.message);
        expect(put, 'the PUT never got an answer').to.equal('fetch failed');
        expect(await victim.exited).to.equal('SIGKILL');
        const file = contentPath(data, 'staging', sha256(layer));
        expect(existsSync(file), 'staged before the crash').to.equal(true);
        // What a power cut can leave of bytes not yet flushed: the right size, the wrong bytes.
        if (cut) writeFileSync(file, Buffer.alloc(Buffer.byteLength(layer)));
        const restarted = await startChild(configFile, '');
        try {
          const pusher = new OciClient(restarted.url).as(basic('alice', PASSWORDS.alice));
          const blobUrl = `/v2/${repo}/blobs/${sha256(layer)}`;
          expect((await pusher.request('HEAD', blobUrl)).status).to.equal(cut ? 404 : 200);
          expect(existsSync(file), 'the cut file is removed').to.equal(!cut);
          if (cut) await pusher.pushBlob(repo, layer);
          expect(await (await pusher.request('GET', blobUrl)).text()).to.equal(layer);
        } finally {
          restarted.process.kill('SIGTERM');
          await restarted.exited;
        }
      }
      const db = await openDatabase({ url: databaseUrl || undefined, pgliteDir: path.join(data, 'pglite') });
      try {
        expect(await db.query('SELECT digest FROM blobs WHERE flush_pending IS NOT NULL')).to.deep.equal([]);
      } finally {
        await db.close();
      }
    });

    for (const [way, early] of [['decided before it is stored', true], ['stored staged, then decided', false]] as const) for (const point of FAILPOINTS) {
      it(`leaves nothing half-visible when a push ${way} is killed at ${point}, and completes on the next push`, async () => {
        const repo = `team/${early ? 'early' : 'usual'}/crash-${point.replace(/[^a-z]/g, '')}`;
        const victim = await startChild(configFile, point);
        const alice = new OciClient(victim.url).as(basic('alice', PASSWORDS.alice));
        const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed: point });
        const layer = fileBlob(`layer for ${point}`);
        const manifest = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await alice.pushBlob(repo, config), size: config.length },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await alice.pushBlob(repo, layer), size: layer.length }],
          annotations: { 'org.opencontainers.image.source': 'https://example.com' },
        }));
        const digest = sha256(manifest);
        const put = await alice.putManifest(repo, 'v1', manifest).then((r) => r.status, (err: Error) => err.message);
        expect(put, 'the PUT never got an answer').to.equal('fetch failed');
        expect(await victim.exited).to.equal('SIGKILL');

        const blobsMoved = existsSync(contentPath(path.join(root, 'data'), 'committed', sha256(layer)));
        expect(blobsMoved, 'blobs were committed before the crash').to.equal(true);
        // The manifest's bytes are kept in the database: there is no file of it to move.
        for (const area of ['staging', 'committed'] as const) expect(existsSync(contentPath(path.join(root, 'data'), area, digest)), area).to.equal(false);

        const restarted = await startChild(configFile, '');
        try {
          const reader = new OciClient(restarted.url).as(basic('reader', PASSWORDS.reader));
          const pusher = new OciClient(restarted.url).as(basic('alice', PASSWORDS.alice));
          expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(404);
          expect((await reader.request('GET', `/v2/${repo}/manifests/${digest}`)).status).to.equal(404);
          expect((await reader.request('GET', `/v2/${repo}/blobs/${sha256(layer)}`)).status).to.equal(404);
          expect((await (await reader.request('GET', `/v2/${repo}/tags/list`)).json()) as { tags: string[] }).to.deep.include({ tags: [] });
          // Stored staged first, the pusher still reads its quarantined image; decided first, nothing
          // of the push was committed. Pushing again finishes the commit.
          expect((await pusher.request('GET', `/v2/${repo}/manifests/${digest}`)).status).to.equal(early ? 404 : 200);
          expect((await pusher.putManifest(repo, 'v1', manifest)).status).to.equal(201);
          const pulled = await reader.request('GET', `/v2/${repo}/manifests/v1`);
          expect(pulled.status).to.equal(200);
          expect(Buffer.from(await pulled.arrayBuffer()).equals(manifest)).to.equal(true);
          expect((await reader.request('GET', `/v2/${repo}/blobs/${sha256(layer)}`)).status).to.equal(200);
        } finally {
          restarted.process.kill('SIGTERM');
          await restarted.exited;
        }
        const db = await openDatabase({ url: databaseUrl || undefined, pgliteDir: path.join(root, 'data', 'pglite') });
        try {
          const report = await new AuditLog(db).verify();
          expect(report.problems).to.deep.equal([]);
        } finally {
          await db.close();
        }
      });
    }
  });
}

