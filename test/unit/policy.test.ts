/** Policies: schema with pointers, the manifest rule, the evaluator, the loader and the CLI functions. */
import { expect } from 'chai';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { policyProblems } from '../../src/policy/schema.js';
import { evaluate } from '../../src/policy/evaluate.js';
import { PolicyLoadError, PolicySet, contentHash, readPolicyFile } from '../../src/policy/loader.js';
import { generateKeyPairSync } from 'node:crypto';
import { registerRuleType, unregisterRuleType } from '../../src/policy/registry.js';
import type { Evidence, LoadedPolicy, ManifestFacts, Policy } from '../../src/policy/types.js';
import { lintPolicies, testPolicy } from '../../src/cli/policy.js';
import { parseImage } from '../../src/cli/admit.js';

const PROD_EXAMPLE = {
  name: 'prod', repositories: ['prod/**'], mode: 'enforce',
  rules: [
    { id: 'signed-by-ci', type: 'signature', keys: ['keys/ci.pub'], minSignatures: 1 },
    { id: 'sbom', type: 'attestation', predicateTypes: ['https://spdx.dev/Document', 'https://cyclonedx.org/bom'], signedBy: 'signed-by-ci' },
    { id: 'no-criticals', type: 'vulnerabilities', maxCount: { CRITICAL: 0, HIGH: 3 }, ignoreUnfixed: true,
      exceptions: [{ id: 'CVE-2024-0001', owner: 'sec@example.com', reason: 'not reachable', expires: '2027-01-31' }] },
    { id: 'source-label', type: 'manifest', requireAnnotations: ['org.opencontainers.image.source'], maxSizeBytes: 2147483648 },
  ],
};

function image(overrides: Partial<ManifestFacts> = {}): ManifestFacts {
  return {
    digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: null,
    totalSize: 1000, annotations: {}, labels: {}, platforms: [{ os: 'linux', architecture: 'amd64' }], children: [], ...overrides,
  };
}

function evidenceOf(subject: ManifestFacts): Evidence {
  return { repository: 'prod/app', subject, items: [], extra: {} };
}

function loaded(policy: Policy): LoadedPolicy {
  return { policy, hash: contentHash(JSON.stringify(policy)) };
}

describe('policy schema', () => {
  it('loads the issue\'s prod example with its key, and points at a missing key or an unknown rule type', () => {
    expect(policyProblems(PROD_EXAMPLE)).to.deep.equal([]);
    const dir = mkdtempSync(path.join(tmpdir(), 'prod-policy-'));
    try {
      writeFileSync(path.join(dir, 'prod.json'), JSON.stringify(PROD_EXAMPLE));
      expect(readPolicyFile(path.join(dir, 'prod.json')).problems).to.deep.equal([
        { file: path.join(dir, 'prod.json'), pointer: '/rules/0/keys/0', message: `cannot read public key keys/ci.pub: ENOENT: no such file or directory, open '${path.join(dir, 'keys', 'ci.pub')}'` },
      ]);
      mkdirSync(path.join(dir, 'keys'));
      writeFileSync(path.join(dir, 'keys', 'ci.pub'), generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
      const loadedProd = readPolicyFile(path.join(dir, 'prod.json')).loaded!;
      expect(loadedProd.keys!.map((k) => k.ref)).to.deep.equal(['keys/ci.pub']);
      writeFileSync(path.join(dir, 'escape.json'), JSON.stringify({ ...PROD_EXAMPLE, rules: [{ ...PROD_EXAMPLE.rules[0], keys: ['../../etc/passwd'] }] }));
      expect(readPolicyFile(path.join(dir, 'escape.json')).problems.map((p) => [p.pointer, p.message])).to.deep.equal([
        ['/rules/0/keys/0', 'key ../../etc/passwd is outside the policy directory'],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const problems = policyProblems({ ...PROD_EXAMPLE, rules: [{ id: 'x', type: 'notation', trustStore: 'y' }] });
    expect(problems).to.deep.equal([{ pointer: '/rules/0/type', message: 'rule type "notation" is not available in this gateway yet (known: attestation, licenses, manifest, packages, provenance, signature, vulnerabilities)' }]);
  });

  it('reports every problem with its JSON pointer', () => {
    const problems = policyProblems({
      name: 'Bad Name', repositories: [], mode: 'block', extra: 1,
      rules: [{ id: 'a', type: 'manifest', maxSizeBytes: -1 }, { id: 'a', type: 'manifest', requireAnnotations: 'x' }, { id: 'b', type: 'manifest' }],
    });
    const pointers = problems.map((p) => p.pointer);
    for (const pointer of ['/name', '/repositories', '/mode', '/', '/rules/0/maxSizeBytes', '/rules/1/id', '/rules/1/requireAnnotations', '/rules/2']) {
      expect(pointers, pointer).to.include(pointer);
    }
    expect(problems.find((p) => p.pointer === '/rules/1/id')!.message).to.equal('duplicate rule id "a" (also /rules/0/id)');
    expect(problems.find((p) => p.pointer === '/')!.message).to.equal('unknown property "extra"');
  });
});

describe('manifest rule and evaluator', () => {
  const rule = (options: Record<string, unknown>, mode?: 'warn') =>
    loaded({ name: 'p', repositories: ['**'], mode: 'enforce', rules: [{ id: 'm', type: 'manifest', ...(mode ? { mode } : {}), ...options }] });

  it('passes when every requirement holds', () => {
    const decision = evaluate(rule({ requireAnnotations: ['a'], requireLabels: ['l'], maxSizeBytes: 1000, allowedPlatforms: ['linux/amd64'] }),
      evidenceOf(image({ annotations: { a: 'x' }, labels: { l: 'y' } })), new Date());
    expect(decision.outcome).to.equal('admitted');
    expect(decision.results[0].status).to.equal('passed');
  });

  it('names what is missing or too big', () => {
    const decision = evaluate(rule({ requireAnnotations: ['org.example.a'], requireLabels: ['maintainer'], maxSizeBytes: 512 }), evidenceOf(image()), new Date());
    expect(decision.outcome).to.equal('denied');
    expect(decision.reasons[0]).to.equal(
      'm: annotation org.example.a is missing on sha256:aaaaaaaaaaaa; label maintainer is missing in the config of sha256:aaaaaaaaaaaa; image is 1000 B, above the 512 B limit',
    );
  });

  it('checks platforms and media types of every child of an index, and images without a platform', () => {
    const index = image({
      mediaType: 'application/vnd.oci.image.index.v1+json', platforms: [],
      children: [image({ digest: `sha256:${'b'.repeat(64)}` }), image({ digest: `sha256:${'c'.repeat(64)}`, platforms: [{ os: 'linux', architecture: 's390x' }] }),
        image({ digest: `sha256:${'d'.repeat(64)}`, platforms: [] })],
    });
    const decision = evaluate(rule({ allowedPlatforms: ['linux/amd64', 'linux/arm64'], allowedMediaTypes: ['application/vnd.oci.image.index.v1+json'] }), evidenceOf(index), new Date());
    const message = decision.results[0].message;
    expect(message).to.include('platform linux/s390x is not allowed (allowed: linux/amd64, linux/arm64)');
    expect(message).to.include('sha256:dddddddddddd names no platform');
    expect(message).to.include('media type application/vnd.oci.image.manifest.v1+json of sha256:bbbbbbbbbbbb is not allowed');
    expect(evaluate(rule({ allowedPlatforms: ['linux/arm64'] }), evidenceOf(image({ platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }] })), new Date()).outcome).to.equal('admitted');
  });

  it('admits under warn mode, per policy or per rule, and records the warning', () => {
    const decision = evaluate(rule({ requireAnnotations: ['a'] }, 'warn'), evidenceOf(image()), new Date());
    expect(decision.outcome).to.equal('admitted');
    expect(decision.warnings).to.deep.equal(['m: annotation a is missing on sha256:aaaaaaaaaaaa']);
    expect(decision.results[0]).to.include({ mode: 'warn', status: 'failed' });
  });

  it('is pending on missing evidence, and fails closed when a rule type throws', () => {
    registerRuleType({ type: 't-missing', schema: {}, evaluate: () => ({ status: 'missing', message: 'no signature yet' }) });
    registerRuleType({ type: 't-throws', schema: {}, evaluate: () => { throw new Error('trust root unreadable'); } });
    try {
      const base = { name: 'p', repositories: ['**'], mode: 'enforce' as const };
      const pending = evaluate(loaded({ ...base, rules: [{ id: 's', type: 't-missing' }] }), evidenceOf(image()), new Date());
      expect(pending).to.include({ outcome: 'pending' });
      expect(pending.waitingFor).to.deep.equal(['s: no signature yet']);
      const broken = evaluate(loaded({ ...base, rules: [{ id: 's', type: 't-missing' }, { id: 'x', type: 't-throws' }] }), evidenceOf(image()), new Date());
      expect(broken.outcome).to.equal('denied');
      expect(broken.results[1]).to.include({ status: 'error', message: 'rule could not be evaluated: trust root unreadable' });
    } finally {
      unregisterRuleType('t-missing');
      unregisterRuleType('t-throws');
    }
  });
});

describe('policy directory', () => {
  let dir: string;
  const write = (file: string, doc: unknown) => writeFileSync(path.join(dir, file), typeof doc === 'string' ? doc : JSON.stringify(doc));
  const policy = (name: string, repositories: string[], priority?: number) => ({
    name, repositories, mode: 'enforce', ...(priority !== undefined ? { priority } : {}), rules: [{ id: 'r', type: 'manifest', maxSizeBytes: 10 }],
  });
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'policy-dir-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('selects by priority then name, with * for one segment and ** for any depth', async () => {
    write('a.json', policy('team-one', ['team/*']));
    write('b.json', policy('team-all', ['team/**']));
    write('c.json', policy('urgent', ['team/hot/**'], 10));
    write('policy.schema.json', '{"not": "a policy"}');
    mkdirSync(path.join(dir, 'examples'));
    writeFileSync(path.join(dir, 'examples', 'bad.json'), '{');
    const set = new PolicySet(dir, 'deny');
    await set.load();
    expect(set.select('team/app')!.policy.name).to.equal('team-all');
    expect(set.select('team/a/b')!.policy.name).to.equal('team-all');
    expect(set.select('team/hot/x')!.policy.name).to.equal('urgent');
    expect(set.select('other/x')).to.equal(null);
    expect(set.resolve('other/x').policy.name).to.equal('deny');
    expect(set.resolve('team/app').hash).to.match(/^sha256:[a-f0-9]{64}$/);
  });

  it('stops on every problem at load, keeps the old set on a bad reload, and requires a named default to exist', async () => {
    write('a.json', policy('one', ['**']));
    const set = new PolicySet(dir, 'one');
    await set.load();
    write('b.json', '{ "name": "two" ');
    write('c.json', policy('one', ['x/**']));
    expect(await set.reload()).to.equal(false);
    expect(set.policies().map((p) => p.policy.name)).to.deep.equal(['one']);
    const error = await new PolicySet(dir, 'one').load().catch((e: unknown) => e);
    expect(error).to.be.instanceOf(PolicyLoadError);
    expect((error as PolicyLoadError).problems.map((p) => path.basename(p.file))).to.deep.equal(['b.json', 'c.json']);
    rmSync(path.join(dir, 'b.json'));
    rmSync(path.join(dir, 'c.json'));
    const missing = await new PolicySet(dir, 'nope').load().catch((e: unknown) => e);
    expect((missing as Error).message).to.include('policy.defaultPolicy names "nope"');
  });

  it('reloads when a file changes', async () => {
    write('a.json', policy('one', ['team/**']));
    const set = new PolicySet(dir, 'deny');
    await set.load();
    set.watch();
    try {
      write('b.json', policy('two', ['other/**']));
      const deadline = Date.now() + 5000;
      while (!set.select('other/x') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(set.select('other/x')?.policy.name).to.equal('two');
    } finally {
      set.close();
    }
  });

  it('lints files and directories with exit codes, and tests a policy against evidence offline', () => {
    write('good.json', policy('good', ['**']));
    expect(lintPolicies([dir])).to.deep.equal({ exitCode: 0, output: '1 policy file(s) valid\n' });
    write('bad.json', { ...policy('bad', ['**']), mode: 'strict' });
    const lint = lintPolicies([dir]);
    expect(lint.exitCode).to.equal(2);
    expect(lint.output).to.include(`${path.join(dir, 'bad.json')}: /mode: must be one of "enforce", "warn"`);
    const evidence = path.join(dir, 'evidence.txt');
    writeFileSync(evidence, JSON.stringify({ repository: 'x/y', subject: { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', totalSize: 5 } }));
    const passed = testPolicy(path.join(dir, 'good.json'), evidence, { output: 'table' });
    expect(passed.exitCode).to.equal(0);
    expect(passed.output).to.match(/r\s+manifest\s+enforce\s+passed/);
    writeFileSync(evidence, JSON.stringify({ repository: 'x/y', subject: { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'm', totalSize: 50 } }));
    const denied = testPolicy(path.join(dir, 'good.json'), evidence, { output: 'json' });
    expect(denied.exitCode).to.equal(2);
    expect(JSON.parse(denied.output).reasons).to.deep.equal(['r: image is 50 B, above the 10 B limit']);
    writeFileSync(evidence, '{"repository": 1}');
    expect(testPolicy(path.join(dir, 'good.json'), evidence, { output: 'json' }).exitCode).to.equal(1);
  });

  it('ships a default policy and examples that lint clean', () => {
    expect(lintPolicies(['policies', 'policies/examples']).exitCode).to.equal(0);
  });
});

describe('gateway admit image references', () => {
  it('parses registry, repository, tag and digest', () => {
    expect(parseImage('localhost:5000/team/app:1.0')).to.deep.equal({ registry: 'localhost:5000', repository: 'team/app', tag: '1.0', digest: undefined });
    expect(parseImage(`gw.example.com/app@sha256:${'a'.repeat(64)}`)).to.deep.include({ repository: 'app', digest: `sha256:${'a'.repeat(64)}` });
    expect(parseImage('gw/app')).to.deep.include({ tag: 'latest' });
    expect(() => parseImage('app')).to.throw(/must name the gateway/);
    expect(() => parseImage('gw/App:1')).to.throw(/not a valid repository name/);
  });
});
