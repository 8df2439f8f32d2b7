/**
 * The `vulnerabilities` rule: at most so many findings per severity, optionally ignoring
 * those without a fix, with exceptions per CVE (optionally per package and repository) that
 * carry an owner, a reason and an expiry. An exception stops applying on the day it
 * expires, and the decision says so. The scan itself is evidence (`extra.scan`): running →
 * missing; failed → error (fail closed) unless `onError: "warn"`.
 */
import { compileGlobs } from '../../auth/access.js';
import type { Evidence, RuleBase, RuleType } from '../types.js';
import { SEVERITIES, type Finding, type ScanResult, type Severity } from '../../scan/report.js';

export interface VulnerabilityException {
  id: string;
  package?: string;
  repositories?: string[];
  owner: string;
  reason: string;
  /** YYYY-MM-DD (UTC): the first day the exception no longer applies. */
  expires: string;
}

export interface VulnerabilitiesRule extends RuleBase {
  type: 'vulnerabilities';
  maxCount: Partial<Record<Severity, number>>;
  ignoreUnfixed?: boolean;
  onError?: 'fail' | 'warn';
  exceptions?: VulnerabilityException[];
}

/** What the gate puts in `evidence.extra.scan`. */
export type ScanEvidence = { state: 'done'; result: ScanResult } | { state: 'running' } | { state: 'error'; message: string };

export function scanEvidence(evidence: Evidence): ScanEvidence | undefined {
  return evidence.extra.scan as ScanEvidence | undefined;
}

const exceptionSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'owner', 'reason', 'expires'],
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 128 },
    package: { type: 'string', minLength: 1 },
    repositories: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
    owner: { type: 'string', minLength: 1 },
    reason: { type: 'string', minLength: 1 },
    expires: { type: 'string', pattern: '^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$' },
  },
};

function describe(f: Finding): string {
  return `${f.id} (${f.pkgName} ${f.installedVersion}${f.fixedVersion ? `, fixed in ${f.fixedVersion}` : ', no fix'})`;
}

function matches(exception: VulnerabilityException, finding: Finding, repository: string): boolean {
  if (exception.id !== finding.id) return false;
  if (exception.package && exception.package !== finding.pkgName) return false;
  return !exception.repositories || compileGlobs(exception.repositories)(repository);
}

function expired(exception: VulnerabilityException, now: Date): boolean {
  return now.getTime() >= Date.parse(`${exception.expires}T00:00:00Z`);
}

export const vulnerabilitiesRule: RuleType<VulnerabilitiesRule> = {
  type: 'vulnerabilities',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type', 'maxCount'],
    properties: {
      id: true,
      type: true,
      mode: true,
      description: true,
      maxCount: {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        properties: Object.fromEntries(SEVERITIES.map((s) => [s, { type: 'integer', minimum: 0 }])),
      },
      ignoreUnfixed: { type: 'boolean' },
      onError: { enum: ['fail', 'warn'] },
      exceptions: { type: 'array', items: exceptionSchema },
    },
  },
  evaluate(rule, evidence, ctx) {
    const scan = scanEvidence(evidence);
    if (!scan || scan.state === 'running') return { status: 'missing', message: 'the vulnerability scan has not finished' };
    if (scan.state === 'error') {
      return { status: 'error', message: `vulnerability scan failed: ${scan.message}`, ...(rule.onError === 'warn' ? { mode: 'warn' as const } : {}) };
    }
    const considered = rule.ignoreUnfixed ? scan.result.findings.filter((f) => f.fixedVersion) : scan.result.findings;
    const counted: Finding[] = [];
    const waived: string[] = [];
    const lapsed: string[] = [];
    for (const finding of considered) {
      const exception = (rule.exceptions ?? []).find((e) => matches(e, finding, evidence.repository));
      if (exception && !expired(exception, ctx.now)) {
        waived.push(`${finding.id} in ${finding.pkgName} (exception by ${exception.owner} until ${exception.expires}: ${exception.reason})`);
        continue;
      }
      if (exception) lapsed.push(`the exception for ${finding.id} (${exception.owner}) expired on ${exception.expires}`);
      counted.push(finding);
    }
    const over = SEVERITIES.filter((s) => rule.maxCount[s] !== undefined && counted.filter((f) => f.severity === s).length > (rule.maxCount[s] as number));
    const details = {
      counts: Object.fromEntries(SEVERITIES.map((s) => [s, counted.filter((f) => f.severity === s).length])),
      waived,
      expiredExceptions: lapsed,
      dbVersion: scan.result.dbVersion,
    };
    if (over.length === 0) {
      const note = waived.length > 0 ? `; waived: ${waived.join('; ')}` : '';
      return { status: 'passed', message: `within limits (${summaryText(details.counts)})${note}`, details };
    }
    const parts = over.map((s) => {
      const found = counted.filter((f) => f.severity === s);
      return `${found.length} ${s} (at most ${rule.maxCount[s]}): ${found.slice(0, 5).map(describe).join(', ')}${found.length > 5 ? ', …' : ''}`;
    });
    return { status: 'failed', message: [...parts, ...lapsed].join('; '), details };
  },
};

function summaryText(counts: Record<string, number>): string {
  return SEVERITIES.map((s) => `${counts[s]} ${s}`).join(', ');
}
