/**
 * The vulnerability gate in a running gateway, with the Trivy stand-in as the scanner:
 * verdicts from real reports, the cache (a second evaluation runs no scan), fail-closed
 * errors, the worker limit, and rescans that report without un-admitting.
 */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAuthGateway, userAuth } from '../helpers/auth.js';
import type { TestGateway } from '../helpers/gateway.js';
import { OCI_MANIFEST, OciClient, sha256 } from '../helpers/oci.js';
import { seedTrivyDb, STANDIN } from '../helpers/trivy.js';

const CRITICAL_ONLY = { maxCount: { CRITICAL: 0 } };

describe('vulnerability gate with the Trivy stand-in', function () {
  this.timeout(60_000);
  let gw: TestGateway;
  let dir: string;
  let control: string;
  let alice: OciClient;
  let reader: OciClient;
  let admin: OciClient;

  const behave = (b: Record<string, unknown>) => writeFileSync(path.join(control, 'behaviour.json'), JSON.stringify(b));
  const calls = () => (existsSync(path.join(control, 'calls.jsonl')) ? readFileSync(path.join(control, 'calls.jsonl'), 'utf8').trim().split('\n').filter(Boolean).length : 0);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'scan-gate-'));
    control = path.join(dir, 'control');
    mkdirSync(control);
    const cacheDir = path.join(dir, 'trivy-cache');
    seedTrivyDb(cacheDir);
    const policies = path.join(dir, 'policies');
    mkdirSync(policies);
    writeFileSync(path.join(policies, 'scanned.json'), JSON.stringify({
      name: 'scanned', repositories: ['team/scanned/**'], mode: 'enforce',
      rules: [{ id: 'no-criticals', type: 'vulnerabilities', ...CRITICAL_ONLY, exceptions: [{ id: 'CVE-2019-14697', package: 'musl-utils', owner: 'sec@example.com', reason: 'unused', expires: '2099-01-01' }] }],
    }));
    writeFileSync(path.join(policies, 'lenient.json'), JSON.stringify({
      name: 'lenient', repositories: ['team/lenient/**'], mode: 'enforce',
      rules: [{ id: 'no-criticals', type: 'vulnerabilities', ...CRITICAL_ONLY, onError: 'warn' }],
    }));
    process.env.TRIVY_STANDIN_DIR = control;
    gw = await startAuthGateway('pglite', (c) => {
      c.policy.dir = policies;
      c.policy.defaultPolicy = 'deny';
      c.gate.putWaitSeconds = 5;
      c.scanner.trivyPath = STANDIN;
      c.scanner.cacheDir = cacheDir;
      c.scanner.workers = 1;
      c.scanner.timeoutSeconds = 2;
    });
    const c = new OciClient(gw.url);
    alice = c.as(userAuth('alice'));
    reader = c.as(userAuth('reader'));
    admin = c.as(userAuth('admin'));
  });
  after(async () => {
    await gw?.stop();
    delete process.env.TRIVY_STANDIN_DIR;
    rmSync(dir, { recursive: true, force: true });
  });

  async function image(repo: string, seed: string) {
    const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed });
    const layer = `layer ${seed}`;
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await alice.pushBlob(repo, config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await alice.pushBlob(repo, layer), size: layer.length }],
    }));
    return { body, digest: sha256(body) };
  }

  const admission = async (repo: string, digest: string) =>
    (await (await alice.request('GET', `/gateway/v1/admissions/${digest}?repository=${repo}`)).json()) as { state: string; reasons: string[]; results: Array<{ status: string; mode: string; message: string }> };

  it('admits an image whose scan is within limits, waiting for the scan within the PUT', async () => {
    behave({ mode: 'report', report: 'centos-7.json', sleepMs: 300 });
    const img = await image('team/scanned/app', 'clean');
    const res = await alice.putManifest('team/scanned/app', 'v1', img.body);
    expect(res.status).to.equal(201);
    expect(res.headers.get('warning')).to.equal(null);
    expect((await reader.request('GET', '/v2/team/scanned/app/manifests/v1')).status).to.equal(200);
    const view = await admission('team/scanned/app', img.digest);
    expect(view.results[0].message).to.match(/^within limits \(0 CRITICAL/);
  });

  it('denies above the limit, applies the exception per package, and never rescans a cached digest', async () => {
    behave({ mode: 'report', report: 'alpine-39.json' });
    const img = await image('team/scanned/app', 'vulnerable');
    const before = calls();
    const res = await alice.putManifest('team/scanned/app', 'v2', img.body);
    expect(res.status).to.equal(403);
    const message = ((await res.json()) as { errors: Array<{ message: string }> }).errors[0].message;
    expect(message).to.include('1 CRITICAL (at most 0): CVE-2019-14697 (musl 1.1.20-r4');
    expect(message).to.not.include('musl-utils');
    expect(calls()).to.equal(before + 1);
    // Re-evaluation and a push of the same image under another tag use the cached result.
    expect((await admin.request('POST', `/gateway/v1/admissions/${img.digest}/re-evaluate?repository=team/scanned/app`)).status).to.equal(200);
    expect((await alice.putManifest('team/scanned/app', 'v3', img.body)).status).to.equal(403);
    expect(calls()).to.equal(before + 1);
    const audit = (await (await admin.request('GET', `/gateway/v1/audit?digest=${img.digest}&action=admission.decision`)).json()) as { records: Array<{ detail: { scan?: { summary: { counts: Record<string, number> } } } }> };
    expect(audit.records.at(-1)!.detail.scan!.summary.counts.CRITICAL).to.equal(2);
  });

  it('fails closed when Trivy crashes or hangs past its timeout, unless the rule says onError: warn', async () => {
    behave({ mode: 'crash' });
    const crashed = await image('team/scanned/app', 'crash');
    const res = await alice.putManifest('team/scanned/app', 'crash', crashed.body);
    expect(res.status).to.equal(403);
    expect(((await res.json()) as { errors: Array<{ message: string }> }).errors[0].message).to.include('vulnerability scan failed: Trivy failed (exit status 2)');

    behave({ mode: 'hang' });
    const hung = await image('team/lenient/app', 'hang');
    const lenient = await alice.putManifest('team/lenient/app', 'v1', hung.body);
    // The PUT answers while the scan is still running; the kill comes after the 2 s timeout.
    expect(lenient.status).to.equal(201);
    const deadline = Date.now() + 15_000;
    let view = await admission('team/lenient/app', hung.digest);
    while (view.state === 'pending' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      view = await admission('team/lenient/app', hung.digest);
    }
    expect(view.state).to.equal('admitted');
    expect(view.results[0]).to.include({ status: 'error', mode: 'warn' });
    expect(view.results[0].message).to.include('Trivy was stopped: it ran longer than 2s');
  });

  it('runs one scan at a time with one worker', async () => {
    behave({ mode: 'report', report: 'centos-7.json', sleepMs: 200 });
    const images = await Promise.all([1, 2, 3].map((i) => image('team/scanned/many', `many-${i}`)));
    const before = calls();
    const answers = await Promise.all(images.map((img, i) => alice.putManifest('team/scanned/many', `v${i}`, img.body)));
    expect(answers.map((r) => r.status)).to.deep.equal([201, 201, 201]);
    const log = readFileSync(path.join(control, 'calls.jsonl'), 'utf8').trim().split('\n').slice(before).map((l) => JSON.parse(l) as { at: string });
    expect(log).to.have.length(3);
    const starts = log.map((l) => Date.parse(l.at)).sort((a, b) => a - b);
    expect(starts[1] - starts[0]).to.be.at.least(150);
    expect(starts[2] - starts[1]).to.be.at.least(150);
  });

  it('rescans admitted images, reports new findings and keeps them pullable', async () => {
    behave({ mode: 'report', report: 'alpine-39.json' });
    seedTrivyDb(path.join(dir, 'trivy-cache'), '2026-11-22T00:00:00Z');
    expect((await alice.request('POST', '/gateway/v1/rescans?repository=team/scanned/app')).status).to.equal(403);
    const res = await admin.request('POST', '/gateway/v1/rescans?repository=team/scanned/app');
    expect(res.status).to.equal(200);
    const { rescanned } = (await res.json()) as { rescanned: Array<{ digest: string; wouldBe: string; newFindings: string[] }> };
    expect(rescanned).to.have.length(1);
    expect(rescanned[0].wouldBe).to.equal('denied');
    expect(rescanned[0].newFindings).to.include('CVE-2019-14697 (CRITICAL) in musl 1.1.20-r4');
    expect((await reader.request('GET', '/v2/team/scanned/app/manifests/v1')).status).to.equal(200);
    expect((await admission('team/scanned/app', rescanned[0].digest)).state).to.equal('admitted');
    const audit = (await (await admin.request('GET', `/gateway/v1/audit?action=rescan&digest=${rescanned[0].digest}`)).json()) as { records: unknown[] };
    expect(audit.records).to.have.length(1);
  });
});
