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

/** Types named `builtin-…` (the default deny) serve the gateway itself; policy files cannot use them. */
function isPublic(type: string): boolean {
  return !type.startsWith('builtin-');
}

/** Rule types policy files may use, by name. */
export function ruleTypes(): RuleType[] {
  return [...types.values()].filter((t) => isPublic(t.type)).sort((a, b) => (a.type < b.type ? -1 : 1));
}

/** Names of the rule types policy files may use. */
export function ruleTypeNames(): string[] {
  return ruleTypes().map((t) => t.type);
}

registerRuleType(manifestRule);
registerRuleType(vulnerabilitiesRule);
registerRuleType(signatureRule);
registerRuleType(attestationRule);
registerRuleType(packagesRule);
registerRuleType(licensesRule);
registerRuleType(provenanceRule);
