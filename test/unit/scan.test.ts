/**
 * Trivy's reports, the vulnerabilities rule, the Trivy adapter against the stand-in (which
 * takes Trivy's real flags and refuses others), and the worker pool.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseTrivyReport, ReportError, summarize, type ScanResult } from '../../src/scan/report.js';
import { TrivyScanner, ScanError } from '../../src/scan/trivy.js';
import { QueueFullError, WorkerPool } from '../../src/scan/pool.js';
import { evaluate } from '../../src/policy/evaluate.js';
import { policyProblems } from '../../src/policy/schema.js';
import { contentHash } from '../../src/policy/loader.js';
import type { Evidence, LoadedPolicy, Policy } from '../../src/policy/types.js';
import type { ScanEvidence } from '../../src/policy/rules/vulnerabilities.js';
import { seedTrivyDb, STANDIN, TRIVY_FIXTURES } from '../helpers/trivy.js';

const FIXTURES = TRIVY_FIXTURES;
const fixture = (name: string) => readFileSync(path.join(FIXTURES, name), 'utf8');

function resultOf(name: string): ScanResult {
  const findings = parseTrivyReport(fixture(name));
  return { digests: [], dbVersion: 'v2 test', scanner: 'trivy', scannedAt: '2026-11-22T00:00:00Z', findings, summary: summarize(findings) };
}

function evidenceWith(scan: ScanEvidence | undefined, repository = 'prod/app'): Evidence {
  return {
    repository,
    subject: { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: null, totalSize: 1, annotations: {}, labels: {}, platforms: [], children: [] },
    items: [],
    extra: scan ? { scan } : {},
  };
}

function policyWith(rule: Record<string, unknown>): LoadedPolicy {
  const policy = { name: 'p', repositories: ['**'], mode: 'enforce', rules: [{ id: 'vulns', type: 'vulnerabilities', ...rule }] } as Policy;
  expect(policyProblems(policy)).to.deep.equal([]);
  return { policy, hash: contentHash(JSON.stringify(policy)) };
}

describe('Trivy reports', () => {
  it('reads every finding of a real report, one per vulnerability, package and version', () => {
    const findings = parseTrivyReport(fixture('alpine-39.json'));
    expect(findings).to.have.length(6);
    expect(summarize(findings).counts).to.include({ CRITICAL: 2, MEDIUM: 4, HIGH: 0 });
    expect(findings[0]).to.include({ id: 'CVE-2019-1549', pkgName: 'libcrypto1.1', installedVersion: '1.1.1b-r1' });
    const unfixed = parseTrivyReport(fixture('debian-buster.json')).filter((f) => !f.fixedVersion);
    expect(unfixed).to.have.length(1);
    const doubled = JSON.parse(fixture('alpine-39.json')) as { Results: Array<{ Vulnerabilities: unknown[] }> };
    doubled.Results[0].Vulnerabilities.push(...doubled.Results[0].Vulnerabilities);
    expect(parseTrivyReport(JSON.stringify(doubled))).to.have.length(6);
  });

  it('refuses what is not a SchemaVersion 2 report', () => {
    expect(() => parseTrivyReport('not json')).to.throw(ReportError, /no JSON report/);
    expect(() => parseTrivyReport('{"SchemaVersion": 1}')).to.throw(ReportError, /SchemaVersion 2/);
    expect(() => parseTrivyReport('{"SchemaVersion": 2, "Results": [{"Target": "x", "Vulnerabilities": [{"PkgName": "a"}]}]}')).to.throw(ReportError);
  });
});

describe('vulnerabilities rule', () => {
  const now = new Date('2026-11-22T12:00:00Z');
  const done = (name: string): ScanEvidence => ({ state: 'done', result: resultOf(name) });

  it('denies above the maximum per severity and names the findings', () => {
    const decision = evaluate(policyWith({ maxCount: { CRITICAL: 0, HIGH: 3 } }), evidenceWith(done('alpine-39.json')), now);
    expect(decision.outcome).to.equal('denied');
    expect(decision.reasons[0]).to.match(/^vulns: 2 CRITICAL \(at most 0\): CVE-2019-14697 \(musl 1\.1\.20-r4, fixed in 1\.1\.20-r5\)/);
    expect(evaluate(policyWith({ maxCount: { CRITICAL: 2, MEDIUM: 4 } }), evidenceWith(done('alpine-39.json')), now).outcome).to.equal('admitted');
  });

  it('ignores findings without a fix when asked', () => {
    const rule = { maxCount: { LOW: 0 } };
    expect(evaluate(policyWith(rule), evidenceWith(done('debian-buster.json')), now).outcome).to.equal('denied');
    expect(evaluate(policyWith({ ...rule, ignoreUnfixed: true }), evidenceWith(done('debian-buster.json')), now).outcome).to.equal('admitted');
  });

  it('applies an exception until the day it expires, per package and repository, and says when it lapsed', () => {
    const exception = { id: 'CVE-2019-14697', owner: 'sec@example.com', reason: 'not reachable', expires: '2026-11-23' };
    const rule = (e: Record<string, unknown>) => policyWith({ maxCount: { CRITICAL: 0 }, exceptions: [e] });
    const before = evaluate(rule(exception), evidenceWith(done('alpine-39.json')), now);
    expect(before.outcome).to.equal('admitted');
    expect(before.results[0].message).to.include('CVE-2019-14697 in musl (exception by sec@example.com until 2026-11-23: not reachable)');
    const onTheDay = evaluate(rule(exception), evidenceWith(done('alpine-39.json')), new Date('2026-11-23T00:00:00Z'));
    expect(onTheDay.outcome).to.equal('denied');
    expect(onTheDay.reasons[0]).to.include('the exception for CVE-2019-14697 (sec@example.com) expired on 2026-11-23');
    expect(evaluate(rule({ ...exception, package: 'openssl' }), evidenceWith(done('alpine-39.json')), now).outcome).to.equal('denied');
    expect(evaluate(rule({ ...exception, repositories: ['dev/**'] }), evidenceWith(done('alpine-39.json')), now).outcome).to.equal('denied');
    expect(evaluate(rule({ ...exception, repositories: ['prod/**'] }), evidenceWith(done('alpine-39.json')), now).outcome).to.equal('admitted');
  });

  it('waits for a running scan, fails closed on a failed one unless onError is warn', () => {
    expect(evaluate(policyWith({ maxCount: { CRITICAL: 0 } }), evidenceWith({ state: 'running' }), now).outcome).to.equal('pending');
    expect(evaluate(policyWith({ maxCount: { CRITICAL: 0 } }), evidenceWith(undefined), now).outcome).to.equal('pending');
    const failed: ScanEvidence = { state: 'error', message: 'Trivy is not installed (no executable "trivy")' };
    const closed = evaluate(policyWith({ maxCount: { CRITICAL: 0 } }), evidenceWith(failed), now);
    expect(closed.outcome).to.equal('denied');
    expect(closed.reasons[0]).to.equal('vulns: vulnerability scan failed: Trivy is not installed (no executable "trivy")');
    const warned = evaluate(policyWith({ maxCount: { CRITICAL: 0 }, onError: 'warn' }), evidenceWith(failed), now);
    expect(warned.outcome).to.equal('admitted');
    expect(warned.results[0]).to.include({ status: 'error', mode: 'warn' });
  });

  it('validates its options', () => {
    const problems = policyProblems({ name: 'p', repositories: ['**'], mode: 'enforce', rules: [{ id: 'v', type: 'vulnerabilities', maxCount: { SEVERE: 1 }, exceptions: [{ id: 'CVE-1', owner: 'x', reason: 'y', expires: 'soon' }] }] });
    expect(problems.map((p) => p.pointer)).to.include.members(['/rules/0/maxCount', '/rules/0/exceptions/0/expires']);
  });
});

/** An OCI layout with one image, as the gateway writes it for Trivy. */
function writeLayout(dir: string, options: { corrupt?: boolean } = {}): string {
  const blobs = path.join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (data: string) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(path.join(blobs, hex), options.corrupt && data.startsWith('layer') ? 'tampered' : data);
    return { digest: `sha256:${hex}`, size: Buffer.byteLength(data) };
  };
  const config = put('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = put('layer bytes');
  const manifest = put(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }] }));
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] }));
  return config.digest;
}

describe('Trivy adapter (against the stand-in)', function () {
  this.timeout(20_000);
  let dir: string;
  let control: string;
  let cacheDir: string;
  const scanner = (overrides: Partial<ConstructorParameters<typeof TrivyScanner>[0]> = {}) =>
    new TrivyScanner({ path: STANDIN, cacheDir, timeoutSeconds: 30, server: '', token: '', ...overrides });
  const behave = (b: Record<string, unknown>) => writeFileSync(path.join(control, 'behaviour.json'), JSON.stringify(b));

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'trivy-unit-'));
    control = path.join(dir, 'control');
    cacheDir = path.join(dir, 'cache');
    mkdirSync(control);
    seedTrivyDb(cacheDir);
    process.env.TRIVY_STANDIN_DIR = control;
  });
  afterEach(() => {
    delete process.env.TRIVY_STANDIN_DIR;
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs trivy image offline on an OCI layout and reads its report', async () => {
    const layout = path.join(dir, 'layout');
    writeLayout(layout);
    behave({ mode: 'report', report: 'centos-7.json' });
    const s = scanner();
    const worker = s.workerCacheDir(path.join(dir, 'work'), 0);
    const findings = await s.scan(layout, worker);
    expect(findings.map((f) => f.id)).to.include('CVE-2019-18276');
    const call = JSON.parse(readFileSync(path.join(control, 'calls.jsonl'), 'utf8').trim()) as { argv: string[] };
    expect(call.argv.slice(0, 3)).to.deep.equal(['image', '--input', layout]);
    for (const flag of ['--skip-db-update', '--skip-java-db-update', '--offline-scan', '--skip-version-check', '--disable-telemetry', '--quiet']) {
      expect(call.argv, flag).to.include(flag);
    }
    expect(call.argv).to.include.members(['--scanners', 'vuln', '--format', 'json', '--cache-dir', worker, '--timeout', '30s']);
    expect(s.dbVersion()).to.equal('v2 2026-11-20T00:00:00Z');
  });

  it('has a stand-in that refuses what real Trivy refuses', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) =>
        execFile(STANDIN, args, (err, _stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stderr })),
      );
    expect(await run(['image', '--input', dir, '--no-such-flag'])).to.deep.include({ code: 1 });
    expect((await run(['image', '--input', dir, '--no-such-flag'])).stderr).to.include('unknown flag: --no-such-flag');
    expect((await run(['scan-everything'])).stderr).to.include('unknown command "scan-everything"');
    expect((await run(['image', '--input', dir])).stderr).to.include('not an OCI image layout');
  });

  it('adds --server and --token in client mode', () => {
    const args = scanner({ server: 'http://trivy.internal:4954', token: 's3cret' }).args('/l', '/c');
    expect(args.slice(-4)).to.deep.equal(['--server', 'http://trivy.internal:4954', '--token', 's3cret']);
  });

  it('tells a missing binary, a crash, a bad layout, garbage, a missing database and an overrun apart', async () => {
    const layout = path.join(dir, 'layout');
    writeLayout(layout);
    const worker = scanner().workerCacheDir(path.join(dir, 'work'), 0);
    await expectScanError(scanner({ path: path.join(dir, 'no-such-trivy') }).scan(layout, worker), /Trivy is not installed/);
    behave({ mode: 'crash' });
    await expectScanError(scanner().scan(layout, worker), /Trivy failed \(exit status 2\): panic: runtime error/);
    behave({ mode: 'garbage' });
    await expectScanError(scanner().scan(layout, worker), /no JSON report/);
    behave({ mode: 'report' });
    const bad = path.join(dir, 'bad-layout');
    writeLayout(bad, { corrupt: true });
    await expectScanError(scanner().scan(bad, worker), /does not match its digest/);
    const empty = path.join(dir, 'empty-cache');
    mkdirSync(empty);
    await expectScanError(scanner().scan(layout, empty), /--skip-db-update cannot be specified on the first run/);
    expect(() => scanner({ cacheDir: empty }).dbVersion()).to.throw(ScanError, /no vulnerability database/);
    behave({ mode: 'hang' });
    const started = Date.now();
    await expectScanError(scanner({ timeoutSeconds: 1 }).scan(layout, worker), /Trivy was stopped: it ran longer than 1s/);
    expect(Date.now() - started).to.be.below(5000);
  });
});

async function expectScanError(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err, String(pattern)).to.be.instanceOf(ScanError);
  expect((err as Error).message).to.match(pattern);
}

describe('scan worker pool', () => {
  it('runs at most its workers at once and refuses beyond its queue', async () => {
    const pool = new WorkerPool(2, 2);
    let running = 0;
    let peak = 0;
    const workers = new Set<number>();
    const task = (worker: number) => {
      workers.add(worker);
      running++;
      peak = Math.max(peak, running);
      return new Promise<void>((r) => setTimeout(() => {
        running--;
        r();
      }, 30));
    };
    const accepted = [pool.run(task), pool.run(task), pool.run(task), pool.run(task)];
    await pool.run(task).then(() => expect.fail('a fifth task should be refused'), (err: unknown) => expect(err).to.be.instanceOf(QueueFullError));
    await Promise.all(accepted);
    expect(peak).to.equal(2);
    expect([...workers].sort()).to.deep.equal([0, 1]);
    expect(pool.started).to.equal(4);
  });
});
