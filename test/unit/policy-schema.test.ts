/** Policy validation: the shipped schema composed with each registered rule type's own schema. */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { policyProblems } from '../../src/policy/schema.js';
import { registerRuleType, ruleType, ruleTypeNames, ruleTypes, unregisterRuleType } from '../../src/policy/registry.js';
import { denyPolicy } from '../../src/policy/loader.js';
import type { RuleType } from '../../src/policy/types.js';

const fixture = (name: string): unknown => JSON.parse(readFileSync(new URL(`../fixtures/policies/${name}`, import.meta.url), 'utf8'));

/** Runs `body` with only the named rule types registered, as the gateway was before issues 5 and 6. */
function withOnly(types: string[], body: () => void): void {
  const removed = ruleTypes().filter((t) => !types.includes(t.type));
  removed.forEach((t) => unregisterRuleType(t.type));
  try {
    body();
  } finally {
    removed.forEach((t) => registerRuleType(t as RuleType<never>));
  }
}

describe('policy schema composition', () => {
  it('refuses the issue\'s prod example with one clear message per rule type that is not registered', () => {
    withOnly(['manifest'], () => {
      expect(ruleTypeNames()).to.deep.equal(['manifest']);
      expect(policyProblems(fixture('prod-issue.json'))).to.deep.equal([
        { pointer: '/rules/0/type', message: 'rule type "signature" is not available in this gateway yet (known: manifest)' },
        { pointer: '/rules/1/type', message: 'rule type "attestation" is not available in this gateway yet (known: manifest)' },
        { pointer: '/rules/2/type', message: 'rule type "vulnerabilities" is not available in this gateway yet (known: manifest)' },
      ]);
      expect(policyProblems(fixture('prod-manifest-only.json'))).to.deep.equal([]);
    });
  });

  it('accepts the issue\'s prod example once its rule types are registered, without any change to the core', () => {
    expect(ruleTypeNames()).to.include.members(['signature', 'attestation', 'vulnerabilities', 'manifest']);
    expect(policyProblems(fixture('prod-issue.json'))).to.deep.equal([]);
  });

  it('reports every problem of a file, each with its JSON pointer into the document or the rule', () => {
    expect(policyProblems(fixture('invalid/every-problem.json'))).to.deep.equal([
      { pointer: '/', message: 'unknown property "owner"' },
      { pointer: '/name', message: 'must match pattern "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": lower-case letters, digits and dashes, at most 63, not starting or ending with a dash' },
      { pointer: '/repositories', message: 'must NOT have fewer than 1 items' },
      { pointer: '/mode', message: 'must be one of "enforce", "warn"' },
      { pointer: '/rules/0/maxSizeBytes', message: 'must be >= 1' },
      { pointer: '/rules/1/id', message: 'duplicate rule id "size" (also /rules/0/id)' },
      { pointer: '/rules/1/requireAnnotations', message: 'must be array' },
      { pointer: '/rules/2', message: 'needs at least one of requireAnnotations, requireLabels, allowedMediaTypes, allowedPlatforms, maxSizeBytes' },
      { pointer: '/rules/3/allowedPlatforms/0', message: 'must match pattern "^[a-z0-9_-]+/[a-z0-9_-]+(/[a-z0-9_-]+)?$": os/architecture or os/architecture/variant, like linux/arm64/v8' },
      { pointer: '/rules/4/type', message: 'rule type "notation" is not available in this gateway yet (known: attestation, licenses, manifest, packages, provenance, signature, vulnerabilities)' },
    ]);
  });

  it('names the choice of a rule type whose options are one-of, instead of one error per option', () => {
    const base = { name: 'p', repositories: ['**'], mode: 'enforce' };
    expect(policyProblems({ ...base, rules: [{ id: 's', type: 'signature' }] })).to.deep.equal([
      { pointer: '/rules/0', message: 'needs at least one of keys, keyless' },
    ]);
    expect(policyProblems({ ...base, rules: [{ id: 'a', type: 'attestation', predicateTypes: ['x'] }] })).to.deep.equal([
      { pointer: '/rules/0', message: 'needs one of signedBy, keys' },
    ]);
    const both = policyProblems({ ...base, rules: [{ id: 's', type: 'signature', keys: ['k.pub'] }, { id: 'a', type: 'attestation', predicateTypes: ['x'], signedBy: 's', keys: ['k.pub'] }] });
    expect(both).to.deep.equal([{ pointer: '/rules/1', message: 'needs only one of signedBy, keys, not several' }]);
  });

  it('reports a rule without a type, and rules that are not objects, at their own pointers', () => {
    const problems = policyProblems({ name: 'p', repositories: ['**'], mode: 'warn', rules: [{ id: 'x' }, 7] });
    expect(problems).to.deep.equal([
      { pointer: '/rules/0', message: "must have required property 'type'" },
      { pointer: '/rules/1', message: 'must be object' },
    ]);
    expect(policyProblems([])).to.deep.equal([{ pointer: '/', message: 'must be object' }]);
    expect(policyProblems({ name: 'p', repositories: ['**'], mode: 'warn', rules: [] })).to.deep.equal([
      { pointer: '/rules', message: 'must NOT have fewer than 1 items' },
    ]);
  });

  it('keeps the built-in deny rule out of policy files, before and after the gateway first used it', () => {
    const doc = { name: 'p', repositories: ['**'], mode: 'enforce', rules: [{ id: 'x', type: 'builtin-deny' }] };
    const expected = [{ pointer: '/rules/0/type', message: `rule type "builtin-deny" is not available in this gateway yet (known: ${ruleTypeNames().join(', ')})` }];
    expect(policyProblems(doc)).to.deep.equal(expected);
    denyPolicy();
    expect(ruleType('builtin-deny')).to.not.equal(undefined);
    expect(ruleTypeNames()).to.not.include('builtin-deny');
    expect(policyProblems(doc)).to.deep.equal(expected);
  });

  it('validates against the schema of the rule type registered now, even if one of that name was registered before', () => {
    const first: RuleType = { type: 't-schema', schema: { required: ['a'] }, evaluate: () => ({ status: 'passed', message: 'ok' }) };
    const second: RuleType = { ...first, schema: { required: ['b'] } };
    const doc = (options: object) => ({ name: 'p', repositories: ['**'], mode: 'enforce', rules: [{ id: 'x', type: 't-schema', ...options }] });
    registerRuleType(first as RuleType<never>);
    try {
      expect(policyProblems(doc({ a: 1 }))).to.deep.equal([]);
      registerRuleType(second as RuleType<never>);
      expect(policyProblems(doc({ a: 1 }))).to.deep.equal([{ pointer: '/rules/0', message: "must have required property 'b'" }]);
    } finally {
      unregisterRuleType('t-schema');
    }
  });
});
