/**
 * Rule types over verified evidence (`extra.verified`, see src/verify/evidence.ts):
 * `signature` (k-of-n distinct trusted keys, bound to the exact digest and repository),
 * `attestation` (predicate types signed by a signature rule's keys, about this digest),
 * `packages` and `licenses` (from the packages of attested SBOMs). A signature or SBOM
 * that has not arrived, or does not count, leaves the rule `missing` with the reasons.
 */
import { signerKey, signerName, type AttestationCheck, type Signer, type SignatureCheck, type VerifiedEvidence } from '../../verify/evidence.js';
import { shortDigest } from '../../registry/names.js';
import type { SbomPackage } from '../../sbom/packages.js';
import type { Evidence, RuleBase, RuleContext, RuleType } from '../types.js';

/** A keyless signer: OIDC issuer (exact) and certificate subject (exact, or an anchored regular expression). */
export interface Identity {
  issuer: string;
  subject?: string;
  subjectRegExp?: string;
  /** Fulcio workflow claims that must match exactly (e.g. sourceRepositoryURI, sourceRepositoryRef, buildTrigger). */
  claims?: Record<string, string>;
}

export interface SignatureRule extends RuleBase {
  type: 'signature';
  keys?: string[];
  keyless?: { trustedRoot: string; identities: Identity[] };
  minSignatures?: number;
  /** Accept signatures whose docker-reference names another repository (images copied between repositories). */
  allowReferenceMismatch?: boolean;
  /** Count only signatures with a verified transparency-log entry (default false; keyless needs a timestamp anyway). */
  requireTlog?: boolean;
  requireTimestamp?: boolean;
  /** For an index: `covered` (default) — the index's signatures cover its children; `each` — every image needs its own too. */
  children?: 'covered' | 'each';
  /** Also look for signatures in this repository (cosign's COSIGN_REPOSITORY). */
  signatureRepository?: string;
}

export interface AttestationRule extends RuleBase {
  type: 'attestation';
  predicateTypes: string[];
  /** Id of a signature rule whose keys must have signed the attestation. */
  signedBy?: string;
  keys?: string[];
  /** Only statements made (by the time their predicate records) at most this many days ago. */
  maxAgeDays?: number;
}

export interface ProvenanceRule extends RuleBase {
  type: 'provenance';
  signedBy?: string;
  keys?: string[];
  builderIds?: string[];
  sourceRepositories?: string[];
  buildTypes?: string[];
}

export interface PackagesRule extends RuleBase {
  type: 'packages';
  deny: Array<{ purl?: string; name?: string; versions?: string; reason?: string }>;
}

export interface LicensesRule extends RuleBase {
  type: 'licenses';
  allow?: string[];
  deny?: string[];
}

const keyList = { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, pattern: '^[^/]' } };
const keylessSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['trustedRoot', 'identities'],
  properties: {
    trustedRoot: { type: 'string', minLength: 1, pattern: '^[^/]' },
    identities: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['issuer'],
        oneOf: [{ required: ['subject'] }, { required: ['subjectRegExp'] }],
        properties: {
          issuer: { type: 'string', minLength: 1 },
          subject: { type: 'string', minLength: 1 },
          subjectRegExp: { type: 'string', pattern: '^\\^.*\\$$' },
          claims: {
            type: 'object',
            minProperties: 1,
            additionalProperties: false,
            properties: Object.fromEntries(['buildSignerURI', 'sourceRepositoryURI', 'sourceRepositoryDigest', 'sourceRepositoryRef', 'buildTrigger', 'runInvocationURI'].map((k) => [k, { type: 'string', minLength: 1 }])),
          },
        },
      },
    },
  },
};

/** Whether a signer is one a signature rule trusts: one of its keys, or one of its identities under its root. */
export function trusts(rule: Pick<SignatureRule, 'keys' | 'keyless'>, signer: Signer | null): boolean {
  if (!signer) return false;
  if (signer.keyRef) return (rule.keys ?? []).includes(signer.keyRef);
  if (!signer.identity || !rule.keyless || signer.root !== rule.keyless.trustedRoot) return false;
  const { subject, issuer, claims = {} } = signer.identity;
  return rule.keyless.identities.some(
    (id) =>
      id.issuer === issuer &&
      (id.subject !== undefined ? id.subject === subject : new RegExp(id.subjectRegExp as string).test(subject)) &&
      Object.entries(id.claims ?? {}).every(([name, value]) => claims[name] === value),
  );
}

function describeTrusted(rule: Pick<SignatureRule, 'keys' | 'keyless'>): string {
  const names = [...(rule.keys ?? []), ...(rule.keyless?.identities ?? []).map((i) => `${i.subject ?? i.subjectRegExp} (issuer ${i.issuer})`)];
  return names.join(' or ');
}
const base = { id: true, type: true, mode: true, description: true };

function verified(evidence: Evidence): VerifiedEvidence {
  return (evidence.extra.verified as VerifiedEvidence | undefined) ?? { signatures: [], attestations: [] };
}

function short(digest: string | null): string {
  return digest ? shortDigest(digest) : 'nothing';
}

/** `host:port/team/app:tag` → `team/app` (the registry host and any tag or digest dropped). */
export function repositoryOf(reference: string): string {
  let rest = reference.split('@')[0];
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (first.includes('.') || first.includes(':') || first === 'localhost') rest = rest.slice(slash + 1);
  const colon = rest.lastIndexOf(':');
  return colon > rest.lastIndexOf('/') ? rest.slice(0, colon) : rest;
}

function whyNot(check: SignatureCheck, rule: SignatureRule, evidence: Evidence, digest: string): string | null {
  if (check.problem) return check.problem;
  if (!check.signer || !trusts(rule, check.signer)) return `signed by ${check.signer ? signerName(check.signer) : 'nobody known'}, whom this rule does not trust`;
  if (rule.requireTlog && !check.signer.tlog) return `signed by ${signerName(check.signer)} without a verified transparency-log entry, which this rule requires`;
  if (rule.requireTimestamp && !check.signer.timestamp) return `signed by ${signerName(check.signer)} without a verified timestamp, which this rule requires`;
  if (check.digest !== digest) return `signs ${check.digest ?? 'nothing'}, not ${digest}`;
  if (check.dockerReference && !rule.allowReferenceMismatch && repositoryOf(check.dockerReference) !== evidence.repository) {
    return `names repository ${repositoryOf(check.dockerReference)}, not ${evidence.repository}`;
  }
  return null;
}

export const signatureRule: RuleType<SignatureRule> = {
  type: 'signature',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type'],
    anyOf: [{ required: ['keys'] }, { required: ['keyless'] }],
    properties: {
      ...base,
      keys: keyList,
      keyless: keylessSchema,
      minSignatures: { type: 'integer', minimum: 1 },
      allowReferenceMismatch: { type: 'boolean' },
      requireTlog: { type: 'boolean' },
      requireTimestamp: { type: 'boolean' },
      children: { enum: ['covered', 'each'] },
      signatureRepository: { type: 'string', pattern: '^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$' },
    },
  },
  evaluate(rule, evidence) {
    const own = countSigners(rule, evidence, verified(evidence), evidence.subject.digest);
    const needed = rule.minSignatures ?? 1;
    if (own.signers.length < needed) {
      const found = needed > 1 ? `${own.signers.length} of ${needed} required signatures by distinct trusted signers` : `no signature by ${describeTrusted(rule)}`;
      return { status: 'missing', message: [found, ...own.problems].join('; '), details: own };
    }
    if (rule.children === 'each') {
      const perChild = (evidence.extra.children ?? {}) as Record<string, VerifiedEvidence>;
      const unsigned = Object.entries(perChild)
        .map(([child, v]) => ({ child, count: countSigners(rule, evidence, v, child).signers.length }))
        .filter((c) => c.count < needed)
        .map((c) => short(c.child));
      if (unsigned.length > 0) return { status: 'missing', message: `the index is signed, but not its image(s) ${unsigned.join(', ')} (this rule wants each signed)`, details: own };
    }
    return { status: 'passed', message: `signed by ${own.signers.join(', ')}`, details: own };
  },
};

/** Distinct trusted signers of `digest` among the checks, and why the others do not count. */
function countSigners(rule: SignatureRule, evidence: Evidence, checks: VerifiedEvidence, digest: string): { signers: string[]; problems: string[] } {
  const signers = new Map<string, string>();
  const problems: string[] = [];
  for (const check of checks.signatures) {
    const problem = whyNot(check, rule, evidence, digest);
    if (problem) problems.push(`signature in ${short(check.source)}: ${problem}`);
    else if (check.signer) signers.set(signerKey(check.signer), signerName(check.signer));
  }
  return { signers: [...signers.values()], problems };
}

type Trusted = Pick<SignatureRule, 'keys' | 'keyless'>;

/** Whom an attestation must be signed by: its own keys, or the signers of the signature rule it names. */
function attestationSigners(rule: AttestationRule, ctx: RuleContext): Trusted {
  if (rule.keys) return { keys: rule.keys };
  const signature = ctx.policy.policy.rules.find((r) => r.id === rule.signedBy && r.type === 'signature') as SignatureRule | undefined;
  return { keys: signature?.keys, keyless: signature?.keyless };
}

function attestationProblem(check: AttestationCheck, trusted: Trusted, evidence: Evidence): string | null {
  if (check.problem) return check.problem;
  if (!trusts(trusted, check.signer)) return `signed by ${check.signer ? signerName(check.signer) : 'nobody known'}, whom this rule does not trust`;
  if (!check.subjects.includes(evidence.subject.digest)) return `statement subject is ${check.subjects.map(short).join(', ') || 'empty'}, expected ${evidence.subject.digest}`;
  return null;
}

/** Attestations that count for a rule: verified, by its keys, about this digest, of one of its predicate types. */
export function countingAttestations(evidence: Evidence, trusted: Trusted, predicateTypes?: string[]): { good: AttestationCheck[]; problems: string[] } {
  const good: AttestationCheck[] = [];
  const problems: string[] = [];
  for (const check of verified(evidence).attestations) {
    if (predicateTypes && !predicateTypes.includes(check.predicateType ?? '')) continue;
    const problem = attestationProblem(check, trusted, evidence);
    if (problem) problems.push(`${check.predicateType ?? 'attestation'} in ${short(check.source)}: ${problem}`);
    else good.push(check);
  }
  return { good, problems };
}

export const attestationRule: RuleType<AttestationRule> = {
  type: 'attestation',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type', 'predicateTypes'],
    oneOf: [{ required: ['signedBy'] }, { required: ['keys'] }],
    properties: {
      ...base,
      predicateTypes: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
      signedBy: { type: 'string' },
      keys: keyList,
      maxAgeDays: { type: 'integer', minimum: 1 },
    },
  },
  evaluate(rule, evidence, ctx) {
    const counted = countingAttestations(evidence, attestationSigners(rule, ctx), rule.predicateTypes);
    const problems = [...counted.problems];
    const good = counted.good.filter((a) => {
      if (!rule.maxAgeDays) return true;
      const made = predicateTime(a.predicate);
      if (!made) {
        problems.push(`${a.predicateType} in ${short(a.source)}: its predicate records no creation time, and this rule has a maximum age`);
        return false;
      }
      const ageDays = (ctx.now.getTime() - made.getTime()) / 86_400_000;
      if (ageDays > rule.maxAgeDays) {
        problems.push(`${a.predicateType} in ${short(a.source)} was made ${made.toISOString().slice(0, 10)}, more than ${rule.maxAgeDays} days ago`);
        return false;
      }
      return true;
    });
    if (good.length > 0) {
      return { status: 'passed', message: good.map((a) => `${a.predicateType} signed by ${a.signer ? signerName(a.signer) : ''}`).join(', '), details: { sources: good.map((a) => a.source) } };
    }
    return { status: 'missing', message: [`no signed ${rule.predicateTypes.join(' or ')} attestation for this image`, ...problems].join('; ') };
  },
};

/** When a predicate says it was made: SPDX creationInfo.created, CycloneDX metadata.timestamp, SLSA build times. */
export function predicateTime(predicate: unknown): Date | null {
  const p = (predicate ?? {}) as Record<string, any>;
  const candidates = [
    p.creationInfo?.created,
    p.metadata?.timestamp,
    p.metadata?.buildStartedOn,
    p.metadata?.buildFinishedOn,
    p.runDetails?.metadata?.startedOn,
    p.runDetails?.metadata?.finishedOn,
  ];
  for (const value of candidates) {
    if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return new Date(value);
  }
  return null;
}

const SLSA_TYPES = ['https://slsa.dev/provenance/v0.2', 'https://slsa.dev/provenance/v1'];

/** Builder id, build type and source repositories of an SLSA v0.2 or v1 predicate. */
export function provenanceFacts(predicateType: string, predicate: unknown): { builderId: string | null; buildType: string | null; sources: string[] } {
  const p = (predicate ?? {}) as Record<string, any>;
  if (predicateType === 'https://slsa.dev/provenance/v0.2') {
    const sources = [p.invocation?.configSource?.uri, ...(Array.isArray(p.materials) ? p.materials.map((m: { uri?: unknown }) => m?.uri) : [])];
    return { builderId: p.builder?.id ?? null, buildType: p.buildType ?? null, sources: sources.filter((u): u is string => typeof u === 'string') };
  }
  const workflow = p.buildDefinition?.externalParameters?.workflow;
  const deps = Array.isArray(p.buildDefinition?.resolvedDependencies) ? p.buildDefinition.resolvedDependencies.map((d: { uri?: unknown }) => d?.uri) : [];
  const sources = [workflow?.repository, ...deps];
  return { builderId: p.runDetails?.builder?.id ?? null, buildType: p.buildDefinition?.buildType ?? null, sources: sources.filter((u): u is string => typeof u === 'string') };
}

/** `git+https://github.com/acme/app@refs/heads/main` → `https://github.com/acme/app`. */
function sourceRepository(uri: string): string {
  return uri.replace(/^git\+/, '').split('@')[0].replace(/\.git$/, '');
}

export const provenanceRule: RuleType<ProvenanceRule> = {
  type: 'provenance',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type'],
    oneOf: [{ required: ['signedBy'] }, { required: ['keys'] }],
    anyOf: [{ required: ['builderIds'] }, { required: ['sourceRepositories'] }, { required: ['buildTypes'] }],
    properties: {
      ...base,
      signedBy: { type: 'string' },
      keys: keyList,
      builderIds: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
      sourceRepositories: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
      buildTypes: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
    },
  },
  evaluate(rule, evidence, ctx) {
    const { good, problems } = countingAttestations(evidence, attestationSigners(rule as unknown as AttestationRule, ctx), SLSA_TYPES);
    if (good.length === 0) return { status: 'missing', message: ['no signed SLSA provenance for this image', ...problems].join('; ') };
    const failures: string[] = [];
    for (const a of good) {
      const facts = provenanceFacts(a.predicateType ?? '', a.predicate);
      const why: string[] = [];
      if (rule.builderIds && !rule.builderIds.includes(facts.builderId ?? '')) why.push(`builder ${facts.builderId ?? '(none)'} is not one of ${rule.builderIds.join(', ')}`);
      if (rule.buildTypes && !rule.buildTypes.includes(facts.buildType ?? '')) why.push(`build type ${facts.buildType ?? '(none)'} is not one of ${rule.buildTypes.join(', ')}`);
      if (rule.sourceRepositories && !facts.sources.map(sourceRepository).some((s) => rule.sourceRepositories?.includes(s))) {
        why.push(`built from ${facts.sources.map(sourceRepository).join(', ') || 'no recorded source'}, not ${rule.sourceRepositories.join(' or ')}`);
      }
      if (why.length === 0) return { status: 'passed', message: `built by ${facts.builderId ?? '?'} from ${facts.sources.map(sourceRepository)[0] ?? '?'}` };
      failures.push(`provenance in ${short(a.source)}: ${why.join('; ')}`);
    }
    return { status: 'failed', message: failures.join('; ') };
  },
};

/** Packages of every SBOM attested for the subject and signed by a key the policy trusts. */
function attestedPackages(evidence: Evidence, ctx: RuleContext): SbomPackage[] | null {
  const signatureRules = ctx.policy.policy.rules.filter((r) => r.type === 'signature' || Array.isArray(r.keys)) as SignatureRule[];
  const bySource = new Map(signatureRules.flatMap((r) => countingAttestations(evidence, { keys: r.keys, keyless: r.keyless }).good).map((a) => [a.source + (a.predicateType ?? ''), a]));
  const good = [...bySource.values()];
  const sboms = good.filter((a) => a.packages !== null);
  return sboms.length > 0 ? sboms.flatMap((a) => a.packages ?? []) : null;
}

/** Numeric-aware version comparison: 2.14.1 < 2.17.1 < 2.17.10. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.\-+_]/);
  const pb = b.split(/[.\-+_]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '0';
    const y = pb[i] ?? '0';
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    const c = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x < y ? -1 : x > y ? 1 : 0;
    if (c !== 0) return c;
  }
  return 0;
}

/** `<2.17.1`, `>=2.0.0 <2.17.1`, `=1.2.3` (space-separated comparators, all must hold). */
export function versionInRange(version: string, range: string): boolean {
  return range.trim().split(/\s+/).every((part) => {
    const m = /^(<=|>=|<|>|=)?(.+)$/.exec(part);
    if (!m) return false;
    const c = compareVersions(version, m[2]);
    switch (m[1] ?? '=') {
      case '<': return c < 0;
      case '<=': return c <= 0;
      case '>': return c > 0;
      case '>=': return c >= 0;
      default: return c === 0;
    }
  });
}

function purlBase(purl: string): string {
  return purl.split('@')[0].split('?')[0];
}

export const packagesRule: RuleType<PackagesRule> = {
  type: 'packages',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type', 'deny'],
    properties: {
      ...base,
      deny: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          additionalProperties: false,
          anyOf: [{ required: ['purl'] }, { required: ['name'] }],
          properties: { purl: { type: 'string', pattern: '^pkg:' }, name: { type: 'string', minLength: 1 }, versions: { type: 'string', minLength: 1 }, reason: { type: 'string' } },
        },
      },
    },
  },
  evaluate(rule, evidence, ctx) {
    const packages = attestedPackages(evidence, ctx);
    if (!packages) return { status: 'missing', message: 'no signed SBOM attestation lists the packages of this image' };
    const hits: string[] = [];
    for (const p of packages) {
      for (const d of rule.deny) {
        const byPurl = d.purl && p.purl && purlBase(p.purl) === purlBase(d.purl);
        const byName = d.name && p.name === d.name;
        if (!byPurl && !byName) continue;
        if (d.versions && (!p.version || !versionInRange(p.version, d.versions))) continue;
        hits.push(`SBOM lists ${p.name} ${p.version ?? '(no version)'}, denied by ${rule.id}${d.reason ? ` (${d.reason})` : ''}`);
      }
    }
    if (hits.length > 0) return { status: 'failed', message: hits.join('; ') };
    return { status: 'passed', message: `none of ${packages.length} packages is denied` };
  },
};

/** SPDX ids in a license expression: `(MIT OR Apache-2.0) AND BSD-3-Clause` → three ids. */
export function licenseIds(expression: string): string[] {
  return expression.split(/[()\s]+/).filter((t) => t && !/^(AND|OR|WITH)$/i.test(t));
}

export const licensesRule: RuleType<LicensesRule> = {
  type: 'licenses',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type'],
    anyOf: [{ required: ['allow'] }, { required: ['deny'] }],
    properties: { ...base, allow: { type: 'array', items: { type: 'string', minLength: 1 } }, deny: { type: 'array', items: { type: 'string', minLength: 1 } } },
  },
  evaluate(rule, evidence, ctx) {
    const packages = attestedPackages(evidence, ctx);
    if (!packages) return { status: 'missing', message: 'no signed SBOM attestation lists the licenses of this image' };
    const problems: string[] = [];
    for (const p of packages) {
      for (const id of p.licenses.flatMap(licenseIds)) {
        if (rule.deny?.includes(id)) problems.push(`${p.name} ${p.version ?? ''} is licensed ${id}, which is denied`.replace('  ', ' '));
        else if (rule.allow && !rule.allow.includes(id)) problems.push(`${p.name} ${p.version ?? ''} is licensed ${id}, which is not allowed`.replace('  ', ' '));
      }
    }
    if (problems.length > 0) return { status: 'failed', message: problems.join('; ') };
    return { status: 'passed', message: `the licenses of ${packages.length} packages are acceptable` };
  },
};
