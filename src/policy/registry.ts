/**
 * Rule types the evaluator knows. Each issue that adds evidence (signatures, attestations,
 * scans) registers its rule type here; the evaluator's core does not change.
 */
import type { RuleType } from './types.js';
import { manifestRule } from './rules/manifest.js';
import { vulnerabilitiesRule } from './rules/vulnerabilities.js';
import { attestationRule, licensesRule, packagesRule, provenanceRule, signatureRule } from './rules/evidence.js';

const types = new Map<string, RuleType>();

export function registerRuleType(ruleType: RuleType<never>): void {
  types.set(ruleType.type, ruleType as unknown as RuleType);
}

export function unregisterRuleType(type: string): void {
  types.delete(type);
}

export function ruleType(type: string): RuleType | undefined {
  return types.get(type);
}

/** Rule types policy files may use (built-in ones, such as the default deny, are internal). */
export function ruleTypeNames(): string[] {
  return [...types.keys()].filter((t) => !t.startsWith('builtin-')).sort();
}

registerRuleType(manifestRule);
registerRuleType(vulnerabilitiesRule);
registerRuleType(signatureRule);
registerRuleType(attestationRule);
registerRuleType(packagesRule);
registerRuleType(licensesRule);
registerRuleType(provenanceRule);
