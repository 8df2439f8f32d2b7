/** The evaluator: a pure function of (policy, evidence, time) → decision with a result per rule. */
import { expect } from 'chai';
import { evaluate } from '../../src/policy/evaluate.js';
import { contentHash } from '../../src/policy/loader.js';
import { registerRuleType, unregisterRuleType } from '../../src/policy/registry.js';
import type { Evidence, LoadedPolicy, Policy, PolicyMode, RuleBase, RuleResult, RuleType } from '../../src/policy/types.js';

const evidence: Evidence = {
  repository: 'prod/app',
  subject: {
    digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: null,
    totalSize: 1000, annotations: {}, labels: {}, platforms: [{ os: 'linux', architecture: 'amd64' }], children: [],
  },
  items: [],
  extra: {},
};

/** Test rule types: `t-status` answers the rule's `status`; others misbehave in one way each. */
interface StatusRule extends RuleBase {
  status: RuleResult['status'];
  lowerTo?: PolicyMode;
}
const statusType: RuleType<StatusRule> = {
  type: 't-status',
  schema: {},
  evaluate: (rule) => ({ status: rule.status, message: `said ${rule.status}`, ...(rule.lowerTo ? { mode: rule.lowerTo } : {}) }),
};
const seen: Array<{ now: Date; earlier: string[] }> = [];
const observerType: RuleType = {
  type: 't-observer',
  schema: {},
  evaluate: (_rule, _evidence, ctx) => {
    seen.push({ now: ctx.now, earlier: [...ctx.earlier.keys()] });
    const signed = ctx.earlier.get('sig');
    return signed?.status === 'passed' ? { status: 'passed', message: 'after a passed signature' } : { status: 'missing', message: 'waits for sig' };
  },
};
const throwingType: RuleType = { type: 't-throws', schema: {}, evaluate: () => { throw new Error('trust root unreadable'); } };
const nonsenseType: RuleType = { type: 't-nonsense', schema: {}, evaluate: () => ({ status: 'fine' }) as never };
const impostorType: RuleType = { type: 't-impostor', schema: {}, evaluate: () => ({ id: 'other', type: 'manifest', status: 'passed', message: 'ok' }) as never };
const raisingType: RuleType = { type: 't-raises', schema: {}, evaluate: () => ({ status: 'failed', message: 'no', mode: 'enforce' }) };

function policyOf(mode: PolicyMode, rules: Array<Record<string, unknown>>): LoadedPolicy {
  const policy = { name: 'p', repositories: ['**'], mode, rules } as Policy;
  return { policy, hash: contentHash(JSON.stringify(policy)) };
}

const rule = (id: string, status: RuleResult['status'], extra: Record<string, unknown> = {}) => ({ id, type: 't-status', status, ...extra });

describe('policy evaluator', () => {
  const types = [statusType, observerType, throwingType, nonsenseType, impostorType, raisingType] as RuleType[];
  before(() => types.forEach((t) => registerRuleType(t as RuleType<never>)));
  after(() => types.forEach((t) => unregisterRuleType(t.type)));

  it('admits when every enforced rule passes, and records the policy name, hash and mode', () => {
    const loaded = policyOf('enforce', [rule('a', 'passed'), rule('b', 'passed')]);
    const decision = evaluate(loaded, evidence, new Date());
    expect(decision).to.deep.equal({
      outcome: 'admitted',
      policy: { name: 'p', hash: loaded.hash, mode: 'enforce' },
      results: [
        { id: 'a', type: 't-status', mode: 'enforce', status: 'passed', message: 'said passed' },
        { id: 'b', type: 't-status', mode: 'enforce', status: 'passed', message: 'said passed' },
      ],
      reasons: [],
      waitingFor: [],
      warnings: [],
    });
  });

  it('denies on an enforced failure or error, with reasons prefixed by rule id, even when other evidence is missing', () => {
    const decision = evaluate(policyOf('enforce', [rule('sig', 'missing'), rule('size', 'failed'), rule('scan', 'error')]), evidence, new Date());
    expect(decision.outcome).to.equal('denied');
    expect(decision.reasons).to.deep.equal(['size: said failed', 'scan: said error']);
    expect(decision.waitingFor).to.deep.equal(['sig: said missing']);
  });

  it('is pending when an enforced rule\'s evidence is missing and nothing failed', () => {
    const decision = evaluate(policyOf('enforce', [rule('a', 'passed'), rule('sig', 'missing')]), evidence, new Date());
    expect(decision).to.deep.include({ outcome: 'pending', reasons: [], waitingFor: ['sig: said missing'] });
  });

  it('admits under a warn policy whatever the rules say, and lists every rule that did not pass as a warning', () => {
    const decision = evaluate(policyOf('warn', [rule('a', 'failed'), rule('b', 'missing'), rule('c', 'error'), rule('d', 'passed')]), evidence, new Date());
    expect(decision).to.deep.include({ outcome: 'admitted', reasons: [], waitingFor: [] });
    expect(decision.warnings).to.deep.equal(['a: said failed', 'b: said missing', 'c: said error']);
    expect(decision.results.map((r) => r.mode)).to.deep.equal(['warn', 'warn', 'warn', 'warn']);
  });

  it('lets a rule\'s own mode override the policy\'s, both ways', () => {
    const relaxed = evaluate(policyOf('enforce', [rule('a', 'failed', { mode: 'warn' }), rule('b', 'passed')]), evidence, new Date());
    expect(relaxed).to.deep.include({ outcome: 'admitted', warnings: ['a: said failed'] });
    const strict = evaluate(policyOf('warn', [rule('a', 'failed', { mode: 'enforce' }), rule('b', 'failed')]), evidence, new Date());
    expect(strict).to.deep.include({ outcome: 'denied', reasons: ['a: said failed'], warnings: ['b: said failed'] });
  });

  it('lets a result lower its own mode to warn (onError: warn), but never raise it', () => {
    const lowered = evaluate(policyOf('enforce', [rule('scan', 'error', { lowerTo: 'warn' })]), evidence, new Date());
    expect(lowered).to.deep.include({ outcome: 'admitted', warnings: ['scan: said error'] });
    const raised = evaluate(policyOf('warn', [{ id: 'r', type: 't-raises' }]), evidence, new Date());
    expect(raised).to.deep.include({ outcome: 'admitted', warnings: ['r: no'] });
  });

  it('fails closed: a rule type that throws is an error, and an error denies', () => {
    const decision = evaluate(policyOf('enforce', [rule('a', 'passed'), { id: 'x', type: 't-throws' }]), evidence, new Date());
    expect(decision.outcome).to.equal('denied');
    expect(decision.results[1]).to.deep.equal({ id: 'x', type: 't-throws', mode: 'enforce', status: 'error', message: 'rule could not be evaluated: trust root unreadable' });
  });

  it('fails closed on a rule type that answers no valid result, or a type that is not registered', () => {
    const decision = evaluate(policyOf('enforce', [{ id: 'n', type: 't-nonsense' }, { id: 'u', type: 't-unregistered' }]), evidence, new Date());
    expect(decision.outcome).to.equal('denied');
    expect(decision.reasons).to.deep.equal([
      'n: rule could not be evaluated: its rule type returned no valid result',
      'u: rule type t-unregistered is not available in this gateway',
    ]);
  });

  it('keeps each result under its own rule\'s id and type, whatever the rule type answers', () => {
    const decision = evaluate(policyOf('enforce', [{ id: 'me', type: 't-impostor' }]), evidence, new Date());
    expect(decision.results[0]).to.include({ id: 'me', type: 't-impostor' });
  });

  it('runs rules in document order, with earlier results and the given time in the context', () => {
    seen.length = 0;
    const now = new Date('2026-03-01T00:00:00Z');
    const before = evaluate(policyOf('enforce', [{ id: 'obs', type: 't-observer' }, rule('sig', 'passed')]), evidence, now);
    const after = evaluate(policyOf('enforce', [rule('sig', 'passed'), { id: 'obs', type: 't-observer' }]), evidence, now);
    expect(seen).to.deep.equal([{ now, earlier: [] }, { now, earlier: ['sig'] }]);
    expect(before.outcome).to.equal('pending');
    expect(after.outcome).to.equal('admitted');
  });

  it('is pure: the same policy and evidence give the same decision, and neither is changed', () => {
    const loaded = policyOf('enforce', [rule('a', 'failed'), rule('b', 'missing', { mode: 'warn' })]);
    const policyCopy = structuredClone(loaded);
    const evidenceCopy = structuredClone(evidence);
    const first = evaluate(loaded, evidence, new Date('2026-01-01T00:00:00Z'));
    const second = evaluate(loaded, evidence, new Date('2026-01-01T00:00:00Z'));
    expect(second).to.deep.equal(first);
    expect(loaded).to.deep.equal(policyCopy);
    expect(evidence).to.deep.equal(evidenceCopy);
  });
});
