/**
 * The gate end to end over HTTP, on PGlite and PostgreSQL: quarantine, verdicts under
 * enforce and warn, both orderings of evidence, indexes admitted with their children,
 * parallel pushes, expiry, audit-or-fail, an interrupted commit, and policy changes.
 */
import { expect } from 'chai';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { registerRuleType, unregisterRuleType } from '../../src/policy/registry.js';
import type { RuleBase, RuleType } from '../../src/policy/types.js';
import { DATABASE_KINDS } from '../helpers/gateway.js';
import { startAuthGateway, userAuth } from '../helpers/auth.js';
import { fileBlob, OCI_INDEX, OCI_MANIFEST, OciClient, sha256 } from '../helpers/oci.js';
import type { TestGateway } from '../helpers/gateway.js';

const SOURCE = 'org.opencontainers.image.source';
const SIG_TYPE = 'application/vnd.example.signature';

/** A rule type only these tests register: evidence of one artifact type must exist (else missing). */
interface NeedsArtifact extends RuleBase {
  artifactType: string;
}
const needsArtifact: RuleType<NeedsArtifact> = {
  type: 'test-needs-artifact',
  schema: { type: 'object', required: ['id', 'type', 'artifactType'], properties: { artifactType: { type: 'string' } } },
  evaluate: (rule, evidence) =>
    evidence.items.some((i) => i.artifactType === rule.artifactType)
      ? { status: 'passed', message: `found ${rule.artifactType}` }
      : { status: 'missing', message: `no ${rule.artifactType} for ${evidence.subject.digest}` },
};

const POLICIES: Record<string, unknown> = {
  'enforce.json': { name: 'enforce', repositories: ['team/enforce/**'], mode: 'enforce', rules: [{ id: 'source', type: 'manifest', requireAnnotations: [SOURCE] }] },
  'warn.json': { name: 'warn', repositories: ['team/warn/**'], mode: 'warn', rules: [{ id: 'source', type: 'manifest', requireAnnotations: [SOURCE] }] },
  // Warn, with a rule that reads evidence: stored staged, then decided (the usual path), and admitted.
  'usual.json': { name: 'usual', repositories: ['team/usual/**'], mode: 'warn', rules: [{ id: 'sig', type: needsArtifact.type, artifactType: SIG_TYPE }] },
  'signed.json': { name: 'signed', repositories: ['team/signed/**'], mode: 'enforce', rules: [{ id: 'sig', type: needsArtifact.type, artifactType: SIG_TYPE }] },
  'multi.json': {
    name: 'multi',
    repositories: ['team/multi/**'],
    mode: 'enforce',
    rules: [{ id: 'platforms', type: 'manifest', requireAnnotations: [SOURCE], allowedPlatforms: ['linux/amd64', 'linux/arm64'] }],
  },
};

interface Built {
  body: Buffer;
  digest: string;
}

/** Pushes config and layer blobs and returns an image manifest for them, not yet pushed. */
async function buildImage(c: OciClient, repo: string, options: { annotations?: Record<string, string>; arch?: string; layer?: string } = {}): Promise<Built> {
  const config = JSON.stringify({ architecture: options.arch ?? 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed: Math.random() });
  const layer = options.layer ?? `layer ${Math.random()}`;
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await c.pushBlob(repo, config), size: Buffer.byteLength(config) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await c.pushBlob(repo, layer), size: Buffer.byteLength(layer) }],
    ...(options.annotations ? { annotations: options.annotations } : {}),
  };
  const body = Buffer.from(JSON.stringify(manifest));
  return { body, digest: sha256(body) };
}

async function signatureFor(c: OciClient, repo: string, subject: Built): Promise<Built> {
  await c.pushBlob(repo, '{}');
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: SIG_TYPE,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 },
    layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 }],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.body.length },
  }));
  return { body, digest: sha256(body) };
}

async function json<T>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

interface AdmissionView {
  state: string;
  results: Array<{ id: string; status: string; mode: string; message: string }>;
  reasons: string[];
  waitingFor: string[];
  warnings: string[];
  admittedWith: string | null;
  policy: { name: string; hash: string };
  evaluations: number;
  decidedAt: string | null;
}

for (const kind of DATABASE_KINDS) {
  describe(`the gate on ${kind}`, function () {
    this.timeout(60_000);
    let gw: TestGateway;
    let dir: string;
    let alice: OciClient;
    let reader: OciClient;
    let admin: OciClient;

    before(async () => {
      registerRuleType(needsArtifact);
      dir = mkdtempSync(path.join(tmpdir(), 'policies-'));
      for (const [file, doc] of Object.entries(POLICIES)) writeFileSync(path.join(dir, file), JSON.stringify(doc));
      gw = await startAuthGateway(kind, (c) => {
        c.policy.dir = dir;
        c.policy.defaultPolicy = 'deny';
        c.gate.putWaitSeconds = 2;
      });
      const c = new OciClient(gw.url);
      alice = c.as(userAuth('alice'));
      reader = c.as(userAuth('reader'));
      admin = c.as(userAuth('admin'));
    });
    after(async () => {
      await gw.stop();
      rmSync(dir, { recursive: true, force: true });
      unregisterRuleType(needsArtifact.type);
    });

    const admission = (client: OciClient, repo: string, digest: string, wait = '') =>
      client.request('GET', `/gateway/v1/admissions/${digest}?repository=${repo}${wait ? `&wait=${wait}` : ''}`);
    const auditFor = async (digest: string) =>
      (await json<{ records: Array<{ action: string; detail: Record<string, unknown> }> }>(await admin.request('GET', `/gateway/v1/audit?digest=${digest}`))).records;

    it('denies under enforce with the reason, hides the image from readers and shows it to the pusher', async () => {
      const image = await buildImage(alice, 'team/enforce/app');
      const res = await alice.putManifest('team/enforce/app', 'v1', image.body);
      expect(res.status).to.equal(403);
      const error = (await json<{ errors: Array<{ code: string; message: string; detail: { reasons: string[] } }> }>(res)).errors[0];
      expect(error.code).to.equal('DENIED');
      expect(error.detail.reasons[0]).to.match(/^source: annotation org\.opencontainers\.image\.source is missing/);
      expect((await reader.request('GET', `/v2/team/enforce/app/manifests/${image.digest}`)).status).to.equal(404);
      expect((await reader.request('GET', '/v2/team/enforce/app/manifests/v1')).status).to.equal(404);
      expect((await alice.request('GET', `/v2/team/enforce/app/manifests/${image.digest}`)).status).to.equal(200);
      const view = await json<AdmissionView>(await admission(alice, 'team/enforce/app', image.digest));
      expect(view.state).to.equal('denied');
      expect(view.results).to.have.length(1);
      expect(view.results[0]).to.include({ id: 'source', status: 'failed', mode: 'enforce' });
      expect(view.policy.name).to.equal('enforce');
      expect(view.evaluations).to.equal(1);
      expect(view.decidedAt).to.be.a('string');
      expect((await admission(reader, 'team/enforce/app', image.digest)).status).to.equal(404);
      // The verdict is frozen: the same push under the same policy is denied again without a new decision.
      expect((await alice.putManifest('team/enforce/app', 'v1', image.body)).status).to.equal(403);
      expect((await auditFor(image.digest)).filter((r) => r.action === 'admission.decision')).to.have.length(1);
    });

    it('admits what meets the policy, lets readers pull it, and audits push, decision and commit in order', async () => {
      const image = await buildImage(alice, 'team/enforce/app', { annotations: { [SOURCE]: 'https://example.com/app' } });
      const res = await alice.putManifest('team/enforce/app', 'v2', image.body);
      expect(res.status).to.equal(201);
      expect(res.headers.get('warning')).to.equal(null);
      const pulled = await reader.request('GET', '/v2/team/enforce/app/manifests/v2');
      expect(pulled.status).to.equal(200);
      expect(pulled.headers.get('docker-content-digest')).to.equal(image.digest);
      expect((await json<AdmissionView>(await admission(reader, 'team/enforce/app', image.digest))).state).to.equal('admitted');
      expect((await auditFor(image.digest)).map((r) => r.action)).to.deep.equal(['push', 'admission.decision', 'commit']);
      // Decided before it was stored (manifest rules only): one transaction wrote the manifest's
      // row, its tag, its admission and the three records, and none of them changed since.
      const [writers] = await gw.db.query<{ n: number }>(
        `SELECT count(DISTINCT x)::int AS n FROM (
           SELECT m.xmin::text AS x FROM manifests m WHERE m.digest = $1
           UNION ALL SELECT t.xmin::text FROM tags t WHERE t.manifest_digest = $1
           UNION ALL SELECT a.xmin::text FROM admissions a WHERE a.digest = $1
           UNION ALL SELECT l.xmin::text FROM audit_log l WHERE l.digest = $1) AS w`,
        [image.digest],
      );
      expect(writers.n).to.equal(1);
    });

    it('admits under warn and records what would have failed', async () => {
      const image = await buildImage(alice, 'team/warn/app');
      const res = await alice.putManifest('team/warn/app', 'v1', image.body);
      expect(res.status).to.equal(201);
      expect(res.headers.get('warning')).to.match(/admitted with warnings: source: annotation org\.opencontainers\.image\.source is missing/);
      expect((await reader.request('GET', '/v2/team/warn/app/manifests/v1')).status).to.equal(200);
      const view = await json<AdmissionView>(await admission(reader, 'team/warn/app', image.digest));
      expect(view.state).to.equal('admitted');
      expect(view.warnings).to.have.length(1);
      expect(view.results[0]).to.include({ status: 'failed', mode: 'warn' });
    });

    it('denies repositories no policy names when the default is deny', async () => {
      const image = await buildImage(alice, 'team/elsewhere');
      const res = await alice.putManifest('team/elsewhere', 'v1', image.body);
      expect(res.status).to.equal(403);
      expect((await json<{ errors: Array<{ message: string }> }>(res)).errors[0].message).to.include('no policy applies to repository team/elsewhere');
    });

    it('image first: quarantines, then admits when the evidence arrives and commits the evidence with it', async () => {
      const repo = 'team/signed/app';
      const image = await buildImage(alice, repo);
      const res = await alice.putManifest(repo, 'v1', image.body);
      expect(res.status).to.equal(201);
      expect(res.headers.get('warning')).to.match(/quarantine, waiting for: sig: no application\/vnd\.example\.signature/);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(404);
      expect((await alice.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
      const pending = await json<AdmissionView>(await admission(alice, repo, image.digest));
      expect([pending.state, pending.evaluations, pending.decidedAt, pending.policy.name]).to.deep.equal(['pending', 1, null, 'signed']);
      expect(pending.waitingFor).to.have.length(1);
      const waiting = admission(alice, repo, image.digest, '20s');
      await new Promise((r) => setTimeout(r, 300));
      const sig = await signatureFor(alice, repo, image);
      const sigRes = await alice.putManifest(repo, sig.digest, sig.body);
      expect(sigRes.status).to.equal(201);
      expect(sigRes.headers.get('oci-subject')).to.equal(image.digest);
      const view = await json<AdmissionView>(await waiting);
      expect(view.state).to.equal('admitted');
      expect(view.evaluations).to.equal(2);
      expect(view.decidedAt).to.be.a('string');
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
      const referrers = await json<{ manifests: Array<{ digest: string }> }>(await reader.request('GET', `/v2/${repo}/referrers/${image.digest}`));
      expect(referrers.manifests.map((m) => m.digest)).to.deep.equal([sig.digest]);
      const decisions = (await auditFor(image.digest)).filter((r) => r.action === 'admission.decision');
      expect(decisions.map((r) => r.detail.outcome)).to.deep.equal(['pending', 'admitted']);
      expect(decisions[1].detail).to.include({ trigger: 'evidence', evidence: sig.digest });
    });

    it('evidence first: the image PUT gets a synchronous verdict', async () => {
      const repo = 'team/signed/early';
      const image = await buildImage(alice, repo);
      const sig = await signatureFor(alice, repo, image);
      const sigRes = await alice.putManifest(repo, sig.digest, sig.body);
      expect(sigRes.status).to.equal(201);
      expect(sigRes.headers.get('warning')).to.match(/has not been pushed yet/);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${sig.digest}`)).status).to.equal(404);
      const res = await alice.putManifest(repo, 'v1', image.body);
      expect(res.status).to.equal(201);
      expect(res.headers.get('warning')).to.equal(null);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${sig.digest}`)).status).to.equal(200);
    });

    it('decides a tagged manifest with a subject on its own: it never rides on its subject\'s admission', async () => {
      const repo = 'team/enforce/riders';
      const base = await buildImage(alice, repo, { annotations: { [SOURCE]: 'x' } });
      expect((await alice.putManifest(repo, 'v1', base.body)).status).to.equal(201);
      const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, payload: 'unreviewed' });
      const rider = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await alice.pushBlob(repo, config), size: config.length },
        layers: [], subject: { mediaType: OCI_MANIFEST, digest: base.digest, size: base.body.length },
      }));
      const res = await alice.putManifest(repo, 'latest', rider);
      expect(res.status).to.equal(403);
      expect((await reader.request('GET', `/v2/${repo}/manifests/latest`)).status).to.equal(404);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${sha256(rider)}`)).status).to.equal(404);
      // Its subject's admission (here a re-evaluation) does not carry it along.
      await admin.request('POST', `/gateway/v1/admissions/${base.digest}/re-evaluate?repository=${repo}`);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${sha256(rider)}`)).status).to.equal(404);
    });

    it('admits an index as a whole with its children, and denies one with a platform the policy does not allow', async () => {
      const repo = 'team/multi/app';
      const amd = await buildImage(alice, repo, { arch: 'amd64' });
      const arm = await buildImage(alice, repo, { arch: 'arm64' });
      for (const child of [amd, arm]) {
        const res = await alice.putManifest(repo, child.digest, child.body);
        // Denied on its own (no annotation), answered 201 so that multi-arch pushes finish.
        expect(res.status).to.equal(201);
        expect(res.headers.get('warning')).to.match(/denied on its own/);
      }
      const entry = (b: Built, architecture: string) => ({ mediaType: OCI_MANIFEST, digest: b.digest, size: b.body.length, platform: { os: 'linux', architecture } });
      const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry(amd, 'amd64'), entry(arm, 'arm64')], annotations: { [SOURCE]: 'https://example.com/multi' } }));
      const res = await alice.putManifest(repo, 'v1', index, OCI_INDEX);
      expect(res.status).to.equal(201);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${arm.digest}`)).status).to.equal(200);
      const child = await json<AdmissionView>(await admission(reader, repo, arm.digest));
      expect(child).to.include({ state: 'admitted', admittedWith: sha256(index) });

      const s390 = await buildImage(alice, repo, { arch: 's390x' });
      await alice.putManifest(repo, s390.digest, s390.body);
      const bad = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry(amd, 'amd64'), entry(s390, 's390x')], annotations: { [SOURCE]: 'x' } }));
      const denied = await alice.putManifest(repo, 'v2', bad, OCI_INDEX);
      expect(denied.status).to.equal(403);
      expect((await json<{ errors: Array<{ message: string }> }>(denied)).errors[0].message).to.include('platform linux/s390x is not allowed');
      expect((await reader.request('GET', `/v2/${repo}/manifests/${s390.digest}`)).status).to.equal(404);
    });

    it('makes exactly one admission and one decision of parallel pushes of the same manifest', async () => {
      const repo = 'team/warn/parallel';
      const image = await buildImage(alice, repo, { annotations: { [SOURCE]: 'x' } });
      const tags = Array.from({ length: 8 }, (_, i) => `t${i}`);
      const answers = await Promise.all(tags.map((t) => alice.putManifest(repo, t, image.body)));
      expect(answers.map((r) => r.status)).to.deep.equal(tags.map(() => 201));
      const rows = await gw.db.query<{ n: number }>('SELECT count(*)::int AS n FROM admissions WHERE digest = $1', [image.digest]);
      expect(rows[0].n).to.equal(1);
      expect((await auditFor(image.digest)).filter((r) => r.action === 'admission.decision')).to.have.length(1);
      const listed = await json<{ tags: string[] }>(await reader.request('GET', `/v2/${repo}/tags/list`));
      expect(listed.tags).to.deep.equal(tags);
    });

    it('expires content pending too long and audits it', async () => {
      const repo = 'team/signed/stale';
      const image = await buildImage(alice, repo);
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(201);
      const expired = await gw.gate!.expire(new Date(Date.now() + 60_000), new Date(0));
      expect(expired).to.be.at.least(1);
      expect((await json<AdmissionView>(await admission(alice, repo, image.digest))).state).to.equal('expired');
      expect((await alice.request('GET', `/v2/${repo}/manifests/${image.digest}`)).status).to.equal(404);
      expect((await auditFor(image.digest)).map((r) => r.action)).to.include('expiry');
    });

    it('fails the push when the audit write fails, and admits nothing', async () => {
      const repo = 'team/warn/audit-fails';
      const image = await buildImage(alice, repo, { annotations: { [SOURCE]: 'x' } });
      const original = gw.audit.append.bind(gw.audit);
      gw.audit.append = async (q, event) => {
        if (event.action === 'admission.decision') throw new Error('audit storage unavailable');
        return original(q, event);
      };
      try {
        expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(500);
      } finally {
        gw.audit.append = original;
      }
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(404);
      expect(await gw.db.query('SELECT 1 FROM admissions WHERE digest = $1', [image.digest])).to.have.length(0);
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(201);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
    });

    // A policy of manifest rules decides before the push is stored (one transaction); one that reads evidence after.
    const paths = [['decided before it is stored', 'team/warn', true], ['stored staged, then decided', 'team/usual', false]] as const;

    for (const [way, prefix, early] of paths) it(`leaves nothing half-visible when the commit of a push ${way} stops before its switch commits`, async () => {
      const repo = `${prefix}/interrupted`;
      // A layer large enough to be a file in the blob store (smaller ones are kept in the database).
      const image = await buildImage(alice, repo, { annotations: { [SOURCE]: 'x' }, layer: fileBlob('interrupted') });
      const layer = (JSON.parse(image.body.toString()) as { layers: Array<{ digest: string }> }).layers[0].digest;
      // The commit's record is the switch transaction's last statement: the blobs have moved by then.
      const original = gw.audit.append.bind(gw.audit);
      gw.audit.append = async (q, event) => {
        if (event.action === 'commit') throw new Error('process died here');
        return original(q, event);
      };
      try {
        expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(500);
      } finally {
        gw.audit.append = original;
      }
      // The layer reached the committed area; nothing points at it for readers.
      const [alg, hex] = layer.split(':');
      expect(existsSync(path.join(gw.root, 'committed', alg, hex.slice(0, 2), hex))).to.equal(true);
      expect((await reader.request('GET', `/v2/${repo}/blobs/${layer}`)).status).to.equal(404);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${image.digest}`)).status).to.equal(404);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(404);
      // Decided first, nothing of the push stays (not even its record); stored first, it stays in quarantine.
      expect((await auditFor(image.digest)).map((r) => r.action)).to.deep.equal(early ? [] : ['push']);
      expect((await alice.request('GET', `/v2/${repo}/manifests/${image.digest}`)).status).to.equal(early ? 404 : 200);
      // The push is retried and completes.
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(201);
      expect((await reader.request('GET', `/v2/${repo}/blobs/${layer}`)).status).to.equal(200);
    });

    for (const [way, prefix, early] of paths) it(`fails a push ${way} when a blob cannot be moved into the committed area, admits nothing, and completes once it is uploaded again`, async () => {
      const repo = `${prefix}/lost-layer`;
      const layerBody = fileBlob('lost');
      const image = await buildImage(alice, repo, { annotations: { [SOURCE]: 'x' }, layer: layerBody });
      const layer = (JSON.parse(image.body.toString()) as { layers: Array<{ digest: string }> }).layers[0].digest;
      const [alg, hex] = layer.split(':');
      // The staged file is lost (a disk error, a hand in the data directory) once it was flushed: its move fails.
      await gw.registry.blobFlushes.drain();
      rmSync(path.join(gw.root, 'staging', alg, hex.slice(0, 2), hex));
      const res = await alice.putManifest(repo, 'v1', image.body);
      expect(res.status).to.equal(404);
      const error = (await json<{ errors: Array<{ code: string; message: string }> }>(res)).errors[0];
      expect(error.code).to.equal('BLOB_UNKNOWN');
      expect(error.message).to.include(layer);
      // The admission, the switch and their audit records were one transaction (decided first, with
      // the push's own): none of it stays.
      expect(await gw.db.query('SELECT 1 FROM admissions WHERE digest = $1', [image.digest])).to.have.length(0);
      expect((await auditFor(image.digest)).map((r) => r.action)).to.deep.equal(early ? [] : ['push']);
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(404);
      expect((await reader.request('GET', `/v2/${repo}/manifests/${image.digest}`)).status).to.equal(404);
      // Its record stays, but HEAD answers from the bytes: a client that checks before it
      // uploads finds the layer missing, uploads it again (its lost file is written anew), and
      // the push completes.
      expect((await alice.request('HEAD', `/v2/${repo}/blobs/${layer}`)).status).to.equal(404);
      expect(await alice.pushBlob(repo, layerBody)).to.equal(layer);
      expect((await alice.request('HEAD', `/v2/${repo}/blobs/${layer}`)).status).to.equal(200);
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(201);
      const pulled = await reader.request('GET', `/v2/${repo}/blobs/${layer}`);
      expect(pulled.status).to.equal(200);
      expect(Buffer.from(await pulled.arrayBuffer()).equals(Buffer.from(layerBody))).to.equal(true);
    });

    it('re-evaluates under a changed policy on re-push, and on request by an administrator only', async () => {
      const repo = 'team/enforce/changed';
      const image = await buildImage(alice, repo);
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(403);
      expect((await alice.request('POST', `/gateway/v1/admissions/${image.digest}/re-evaluate?repository=${repo}`)).status).to.equal(403);
      writeFileSync(path.join(dir, 'enforce.json'), JSON.stringify({ ...(POLICIES['enforce.json'] as object), mode: 'warn' }));
      expect(await gw.policies!.reload()).to.equal(true);
      const again = await admin.request('POST', `/gateway/v1/admissions/${image.digest}/re-evaluate?repository=${repo}`);
      expect(again.status).to.equal(200);
      expect((await json<AdmissionView>(again)).state).to.equal('admitted');
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
      writeFileSync(path.join(dir, 'enforce.json'), JSON.stringify(POLICIES['enforce.json']));
      expect(await gw.policies!.reload()).to.equal(true);
      // Never un-admitted by a stricter policy.
      const still = await admin.request('POST', `/gateway/v1/admissions/${image.digest}/re-evaluate?repository=${repo}`);
      expect((await json<AdmissionView>(still)).state).to.equal('admitted');
      expect((await reader.request('GET', `/v2/${repo}/manifests/v1`)).status).to.equal(200);
    });

    it('decides the usual way a push whose digest has an admission already (expired), keeping nothing of the first attempt', async () => {
      const repo = 'team/enforce/returning';
      const image = await buildImage(alice, repo);
      expect((await alice.putManifest(repo, 'v1', image.body)).status).to.equal(403);
      expect(await gw.gate!.expire(new Date(0), new Date(Date.now() + 60_000))).to.be.at.least(1);
      expect((await json<AdmissionView>(await admission(alice, repo, image.digest))).state).to.equal('expired');
      writeFileSync(path.join(dir, 'enforce.json'), JSON.stringify({ ...(POLICIES['enforce.json'] as object), mode: 'warn' }));
      expect(await gw.policies!.reload()).to.equal(true);
      try {
        // Decided before it is stored (admitted under warn); the expired admission sends it the usual way.
        expect((await alice.putManifest(repo, 'v2', image.body)).status).to.equal(201);
      } finally {
        writeFileSync(path.join(dir, 'enforce.json'), JSON.stringify(POLICIES['enforce.json']));
        expect(await gw.policies!.reload()).to.equal(true);
      }
      expect((await reader.request('GET', `/v2/${repo}/manifests/v2`)).status).to.equal(200);
      const view = await json<AdmissionView>(await admission(reader, repo, image.digest));
      expect(view.state).to.equal('admitted');
      expect(view.evaluations).to.equal(2);
      expect((await auditFor(image.digest)).map((r) => r.action)).to.deep.equal(['push', 'admission.decision', 'expiry', 'push', 'admission.decision', 'commit']);
    });

    it('serves the audit trail to administrators only, with validated filters', async () => {
      expect((await alice.request('GET', '/gateway/v1/audit')).status).to.equal(403);
      expect((await new OciClient(gw.url).request('GET', '/gateway/v1/audit')).status).to.equal(401);
      expect((await admin.request('GET', '/gateway/v1/audit?since=yesterday')).status).to.equal(400);
      expect((await admin.request('GET', '/gateway/v1/audit?colour=red')).status).to.equal(400);
      const page = await json<{ records: Array<{ seq: number; principal: string; action: string }>; next: number | null }>(
        await admin.request('GET', '/gateway/v1/audit?principal=alice&action=push&limit=2'),
      );
      expect(page.records).to.have.length(2);
      expect(page.records.every((r) => r.principal === 'alice' && r.action === 'push')).to.equal(true);
      const next = await json<{ records: Array<{ seq: number }> }>(await admin.request('GET', `/gateway/v1/audit?principal=alice&action=push&limit=2&after=${page.next}`));
      expect(next.records[0].seq).to.be.greaterThan(page.records[1].seq);
      // Failed logins are in the trail too.
      await new OciClient(gw.url).as('Basic ' + Buffer.from('alice:wrong').toString('base64')).request('GET', '/v2/');
      const failures = await json<{ records: Array<{ detail: { reason: string } }> }>(await admin.request('GET', '/gateway/v1/audit?action=auth.failure&principal=alice'));
      expect(failures.records.at(-1)!.detail.reason).to.equal('wrong password');
    });

    it('keeps a verifiable audit trail of everything above', async () => {
      const report = await gw.audit.verify();
      expect(report.problems).to.deep.equal([]);
      expect(report.checked).to.be.greaterThan(20);
      const actions = new Set((await gw.audit.query({ limit: 1000 })).map((r) => r.action));
      for (const action of ['policy.load', 'push', 'admission.decision', 'commit', 'expiry']) expect(actions, action).to.include(action);
    });
  });
}
