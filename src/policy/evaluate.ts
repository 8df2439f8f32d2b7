/**
 * The evaluator: a pure function of (policy, evidence, time) → decision with a result per
 * rule. Rules run in document order; a rule type that throws, or answers with something
 * that is not a result, is an `error` (fail closed).
 */
import type { Decision, Evidence, LoadedPolicy, PolicyMode, RuleBase, RuleContext, RuleResult, RuleStatus } from './types.js';
import { ruleType } from './registry.js';

type Outcome = Pick<RuleResult, 'status' | 'message' | 'details'> & { mode?: PolicyMode };

const STATUSES: readonly RuleStatus[] = ['passed', 'failed', 'missing', 'error'];

export function evaluate(loaded: LoadedPolicy, evidence: Evidence, now: Date): Decision {
  const { policy } = loaded;
  const earlier = new Map<string, RuleResult>();
  const results: RuleResult[] = [];
  for (const rule of policy.rules) {
    const result = ruleResult(rule, policy.mode, runRule(rule, evidence, { now, policy: loaded, earlier }));
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

/** Effective mode: the rule's own, else the policy's; a result may lower it to warn, never raise it. */
function ruleResult(rule: RuleBase, policyMode: PolicyMode, outcome: Outcome): RuleResult {
  const mode: PolicyMode = outcome.mode === 'warn' ? 'warn' : (rule.mode ?? policyMode);
  const result: RuleResult = { id: rule.id, type: rule.type, mode, status: outcome.status, message: outcome.message };
  if (outcome.details !== undefined) result.details = outcome.details;
  return result;
}

function runRule(rule: RuleBase, evidence: Evidence, ctx: RuleContext): Outcome {
  const type = ruleType(rule.type);
  if (!type) return { status: 'error', message: `rule type ${rule.type} is not available in this gateway` };
  try {
    return checked(type.evaluate(rule, evidence, ctx));
  } catch (err) {
    return { status: 'error', message: `rule could not be evaluated: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** A rule type's answer as a result, or an error saying why it is not one. */
function checked(outcome: unknown): Outcome {
  const o = outcome as Partial<Outcome> | null;
  if (typeof o !== 'object' || o === null || !STATUSES.includes(o.status as RuleStatus) || typeof o.message !== 'string') {
    return { status: 'error', message: 'rule could not be evaluated: its rule type returned no valid result' };
  }
  return { status: o.status as RuleStatus, message: o.message, details: o.details, mode: o.mode };
}

function line(result: RuleResult): string {
  return `${result.id}: ${result.message}`;
}
