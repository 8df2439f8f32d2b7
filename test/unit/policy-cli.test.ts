/** `gateway policy lint` and `gateway policy test`, as the functions the commands call. */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lintConfigured, lintPolicies, runPolicyTest } from '../../src/cli/policy.js';

const fixtures = fileURLToPath(new URL('../fixtures/policies/', import.meta.url));
const fixture = (name: string) => path.join(fixtures, name);
const evidence = (name: string) => fixture(path.join('evidence', name));

describe('gateway policy lint', () => {
  it('prints every problem as file: /pointer: message and exits 2', () => {
    const file = fixture('invalid/every-problem.json');
    const result = lintPolicies([file]);
    expect(result.exitCode).to.equal(2);
    const lines = result.output.trimEnd().split('\n');
    expect(lines).to.have.length(10);
    expect(lines).to.include.members([
      `${file}: /: unknown property "owner"`,
      `${file}: /mode: must be one of "enforce", "warn"`,
      `${file}: /rules/0/maxSizeBytes: must be >= 1`,
      `${file}: /rules/1/id: duplicate rule id "size" (also /rules/0/id)`,
      `${file}: /rules/2: needs at least one of requireAnnotations, requireLabels, allowedMediaTypes, allowedPlatforms, maxSizeBytes`,
    ]);
  });

  it('exits 0 on the shipped policies and examples', () => {
    expect(lintPolicies(['policies', 'policies/examples'])).to.deep.equal({ exitCode: 0, output: '3 policy file(s) valid\n' });
  });

  it('reports a path that does not exist', () => {
    const result = lintPolicies([fixture('no-such.json')]);
    expect(result.exitCode).to.equal(2);
    expect(result.output).to.match(/no-such\.json: \/: ENOENT/);
  });

  describe('without paths: the configured policy directory', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'lint-config-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    const configure = (defaultPolicy: string) => {
      const config = path.join(dir, 'gateway.yaml');
      writeFileSync(config, `policy:\n  dir: ${JSON.stringify(path.join(dir, 'policies'))}\n  defaultPolicy: ${defaultPolicy}\n`);
      return config;
    };

    it('checks it as the gateway loads it, the default policy included', () => {
      const policies = path.join(dir, 'policies');
      mkdirSync(policies);
      const prod = { name: 'prod', repositories: ['prod/**'], mode: 'enforce', rules: [{ id: 'size', type: 'manifest', maxSizeBytes: 10 }] };
      writeFileSync(path.join(policies, 'prod.json'), JSON.stringify(prod));
      expect(lintConfigured(configure('deny'))).to.deep.equal({ exitCode: 0, output: '1 policy file(s) valid\n' });
      expect(lintConfigured(configure('prod')).exitCode).to.equal(0);
      expect(lintConfigured(configure('default'))).to.deep.equal({
        exitCode: 2,
        output: `${policies}: /: policy.defaultPolicy names "default", which no file here defines (use "deny" or add it)\n`,
      });
    });
  });
});

describe('gateway policy test', () => {
  it('admits (exit 0) and prints a table of rule, type, mode, status and message, then the verdict', () => {
    const result = runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: evidence('image-labelled.json') });
    expect(result.exitCode).to.equal(0);
    expect(result.output).to.match(/^RULE\s+TYPE\s+MODE\s+STATUS\s+MESSAGE$/m);
    expect(result.output).to.match(/^source-label\s+manifest\s+enforce\s+passed\s+the manifest meets every requirement$/m);
    expect(result.output).to.match(/^verdict: ADMITTED$/m);
  });

  it('denies (exit 2) with the reasons, prefixed by rule id', () => {
    const result = runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: evidence('image-bare.json'), output: 'json' });
    expect(result.exitCode).to.equal(2);
    const decision = JSON.parse(result.output) as { outcome: string; reasons: string[]; policy: { name: string; hash: string } };
    expect(decision.outcome).to.equal('denied');
    expect(decision.policy.name).to.equal('prod');
    expect(decision.policy.hash).to.match(/^sha256:[a-f0-9]{64}$/);
    expect(decision.reasons).to.deep.equal([
      'source-label: annotation org.opencontainers.image.source is missing on sha256:9b828d53402d; image is 3.2 GiB, above the 2 GiB limit',
    ]);
  });

  it('keeps warn-mode rules out of the verdict and lists them as warnings', () => {
    const result = runPolicyTest({ policy: fixture('warn-per-rule.json'), evidence: evidence('index-multiarch.json'), output: 'json' });
    const decision = JSON.parse(result.output) as { outcome: string; warnings: string[]; results: Array<{ id: string; mode: string; status: string }> };
    expect(result.exitCode).to.equal(2);
    expect(decision.results.map((r) => [r.id, r.mode, r.status])).to.deep.equal([
      ['size', 'enforce', 'passed'],
      ['source', 'warn', 'passed'],
      ['platforms', 'enforce', 'failed'],
    ]);
    const warned = runPolicyTest({ policy: fixture('warn-per-rule.json'), evidence: evidence('image-unannotated.json'), output: 'json' });
    expect(warned.exitCode).to.equal(0);
    expect(JSON.parse(warned.output)).to.deep.include({
      outcome: 'admitted',
      warnings: ['source: annotation org.opencontainers.image.source is missing on sha256:4d5c248cd4af'],
    });
  });

  it('is pending (exit 3) when evidence is missing, and evaluates as of --now', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'policy-test-'));
    try {
      const policy = path.join(dir, 'scan.json');
      writeFileSync(policy, JSON.stringify({ name: 'scan', repositories: ['**'], mode: 'enforce', rules: [{ id: 'no-criticals', type: 'vulnerabilities', maxCount: { CRITICAL: 0 } }] }));
      const pending = runPolicyTest({ policy, evidence: evidence('image-labelled.json'), now: '2026-01-31T00:00:00Z' });
      expect(pending.exitCode).to.equal(3);
      expect(pending.output).to.match(/^verdict: PENDING$/m);
      expect(pending.output).to.match(/^ {2}waiting for: no-criticals: /m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 1 on evidence that is not in the Evidence shape, naming every problem', () => {
    const file = evidence('invalid.json');
    const result = runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: file });
    expect(result.exitCode).to.equal(1);
    const lines = result.output.trimEnd().split('\n');
    expect(lines).to.include.members([
      `${file}: /repository: must NOT have fewer than 1 characters`,
      `${file}: /subject/digest: must match pattern "^sha(256|512):[a-f0-9]+$"`,
      `${file}: /subject/platforms/0: must have required property 'architecture'`,
      `${file}: /items/0/kind: must be equal to one of the allowed values`,
    ]);
  });

  it('exits 1 on an invalid policy, unreadable evidence, or a bad --now or --output', () => {
    expect(runPolicyTest({ policy: fixture('invalid/every-problem.json'), evidence: evidence('image-bare.json') }).exitCode).to.equal(1);
    expect(runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: evidence('nope.json') }).output).to.match(/cannot read as JSON/);
    expect(runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: evidence('image-bare.json'), now: 'yesterday' })).to.deep.equal({
      exitCode: 1,
      output: '--now must be an ISO 8601 time, like 2026-01-31T12:00:00Z, not "yesterday"\n',
    });
    expect(runPolicyTest({ policy: fixture('prod-manifest-only.json'), evidence: evidence('image-bare.json'), output: 'yaml' }).exitCode).to.equal(1);
  });
});
