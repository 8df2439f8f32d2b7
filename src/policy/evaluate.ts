/**
 * The evaluator: a pure function of (policy, evidence, time) → decision with a result per
 * rule. Rules run in document order; a rule type that throws is an `error` (fail closed).
 */
import type { Decision, Evidence, LoadedPolicy, PolicyMode, RuleResult } from './types.js';
import { ruleType } from './registry.js';

export function evaluate(loaded: LoadedPolicy, evidence: Evidence, now: Date): Decision {
  const { policy } = loaded;
  const earlier = new Map<string, RuleResult>();
  const results: RuleResult[] = [];
  for (const rule of policy.rules) {
    const mode: PolicyMode = rule.mode ?? policy.mode;
    const outcome = runRule(rule, evidence, { now, policy: loaded, earlier });
    const result: RuleResult = { id: rule.id, type: rule.type, ...outcome, mode: outcome.mode ?? mode };
    earlier.set(rule.id, result);
    results.push(result);
  }
  const enforced = results.filter((r) => r.mode === 'enforce');
  const reasons = enforced.filter((r) => r.status === 'failed' || r.status === 'error').map(line);
  const waitingFor = enforced.filter((r) => r.status === 'missing').map(line);
  const warnings = results.filter((r) => r.mode === 'warn' && r.status !== 'passed').map(line);
  const outcome = reasons.length > 0 ? 'denied' : waitingFor.length > 0 ? 'pending' : 'admitted';
  return { outcome, policy: { name: policy.name, hash: loaded.hash, mode: policy.mode }, results, reasons, waitingFor, warnings };
}

function runRule(rule: LoadedPolicy['policy']['rules'][number], evidence: Evidence, ctx: Parameters<NonNullable<ReturnType<typeof ruleType>>['evaluate']>[2]) {
  const type = ruleType(rule.type);
  if (!type) return { status: 'error' as const, message: `rule type ${rule.type} is not available in this gateway` };
  try {
    return type.evaluate(rule, evidence, ctx);
  } catch (err) {
    return { status: 'error' as const, message: `rule could not be evaluated: ${(err as Error).message}` };
  }
}

function line(result: RuleResult): string {
  return `${result.id}: ${result.message}`;
}
