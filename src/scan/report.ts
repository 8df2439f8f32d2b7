/**
 * Trivy's JSON report (SchemaVersion 2) checked at the boundary and reduced to what the
 * gate keeps: one finding per (vulnerability, package, installed version), counts by
 * severity, fixable or not.
 */
import { Ajv } from 'ajv';

export const SEVERITIES = ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'UNKNOWN'] as const;
export type Severity = (typeof SEVERITIES)[number];

export interface Finding {
  id: string;
  pkgName: string;
  installedVersion: string;
  fixedVersion: string | null;
  severity: Severity;
  status: string | null;
  purl: string | null;
  target: string;
  title: string | null;
}

export interface ScanSummary {
  counts: Record<Severity, number>;
  fixable: Record<Severity, number>;
  total: number;
}

export interface ScanResult {
  /** The image manifest(s) scanned. */
  digests: string[];
  /** Vulnerability database version the findings come from (cache key with the digest). */
  dbVersion: string;
  scanner: string;
  scannedAt: string;
  findings: Finding[];
  summary: ScanSummary;
}

interface TrivyVulnerability {
  VulnerabilityID: string;
  PkgName: string;
  InstalledVersion?: string;
  FixedVersion?: string;
  Severity?: string;
  Status?: string;
  Title?: string;
  PkgIdentifier?: { PURL?: string };
}

interface TrivyReport {
  SchemaVersion: 2;
  Results?: Array<{ Target: string; Vulnerabilities?: TrivyVulnerability[] | null }>;
}

const validate = new Ajv({ allErrors: true, strict: false }).compile<TrivyReport>({
  type: 'object',
  required: ['SchemaVersion'],
  properties: {
    SchemaVersion: { const: 2 },
    Results: {
      type: 'array',
      items: {
        type: 'object',
        required: ['Target'],
        properties: {
          Target: { type: 'string' },
          Vulnerabilities: {
            type: ['array', 'null'],
            items: {
              type: 'object',
              required: ['VulnerabilityID', 'PkgName'],
              properties: {
                VulnerabilityID: { type: 'string', minLength: 1 },
                PkgName: { type: 'string' },
                InstalledVersion: { type: 'string' },
                FixedVersion: { type: 'string' },
                Severity: { type: 'string' },
                Status: { type: 'string' },
              },
            },
          },
        },
      },
    },
  },
});

export class ReportError extends Error {}

/** Parses Trivy's stdout; throws ReportError naming what is wrong. */
export function parseTrivyReport(text: string): Finding[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ReportError(`Trivy printed no JSON report: ${(err as Error).message}`);
  }
  if (!validate(doc)) {
    const problems = (validate.errors ?? []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`);
    throw new ReportError(`Trivy's report does not match SchemaVersion 2: ${problems.join('; ')}`);
  }
  const findings = new Map<string, Finding>();
  for (const result of doc.Results ?? []) {
    for (const v of result.Vulnerabilities ?? []) {
      const finding: Finding = {
        id: v.VulnerabilityID,
        pkgName: v.PkgName,
        installedVersion: v.InstalledVersion ?? '',
        fixedVersion: v.FixedVersion ? v.FixedVersion : null,
        severity: toSeverity(v.Severity),
        status: v.Status ?? null,
        purl: v.PkgIdentifier?.PURL ?? null,
        target: result.Target,
        title: v.Title ?? null,
      };
      const key = `${finding.id}\u0000${finding.pkgName}\u0000${finding.installedVersion}`;
      if (!findings.has(key)) findings.set(key, finding);
    }
  }
  return [...findings.values()];
}

function toSeverity(value: string | undefined): Severity {
  return (SEVERITIES as readonly string[]).includes(value ?? '') ? (value as Severity) : 'UNKNOWN';
}

export function summarize(findings: Finding[]): ScanSummary {
  const zero = () => Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
  const counts = zero();
  const fixable = zero();
  for (const f of findings) {
    counts[f.severity]++;
    if (f.fixedVersion) fixable[f.severity]++;
  }
  return { counts, fixable, total: findings.length };
}
