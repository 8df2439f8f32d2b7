/**
 * The contract between the gate and its policies. The admission pipeline gathers
 * `Evidence` about one subject (an image manifest or an index) from the registry; the
 * evaluator is a pure function of (policy, evidence, time) → decision with a result per
 * rule. Rule types plug in through `RuleType` without touching the evaluator's core.
 */

import type { TrustedRoot } from '@sigstore/protobuf-specs';
import type { TrustedKey } from '../verify/keys.js';

export type PolicyMode = 'enforce' | 'warn';

/** Every rule has an id (unique in its policy), a type, and optionally its own mode. */
export interface RuleBase {
  id: string;
  type: string;
  /** Overrides the policy's mode for this rule. */
  mode?: PolicyMode;
  description?: string;
  [key: string]: unknown;
}

export interface Policy {
  name: string;
  description?: string;
  /** Repository globs: `*` within one path segment, `**` across segments. */
  repositories: string[];
  mode: PolicyMode;
  /** Higher wins when several policies match one repository; ties go to the name in byte order. */
  priority?: number;
  rules: RuleBase[];
}

/** A policy as loaded: the document plus where it came from and its content hash. */
export interface LoadedPolicy {
  policy: Policy;
  /** `sha256:<hex>` of the file's bytes; stored with every decision made under it. */
  hash: string;
  /** File the policy came from (absent for built-in ones). */
  file?: string;
  /** Public keys the policy's rules name (`keys`), read from the policy directory at load. */
  keys?: TrustedKey[];
  /** Trusted roots (`keyless.trustedRoot`) the policy's rules name, read at load. */
  trustedRoots?: Array<{ ref: string; root: TrustedRoot }>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** What the registry knows of one manifest under evaluation. */
export interface ManifestFacts {
  digest: string;
  mediaType: string;
  artifactType: string | null;
  /** Manifest bytes plus everything it references (config and layers; for an index, its children's totals). */
  totalSize: number;
  annotations: Record<string, string>;
  /** Image config labels (`config.Labels`); empty for indexes and artifacts. */
  labels: Record<string, string>;
  /** The image's platform from its config, or the platforms an index lists. */
  platforms: Platform[];
  /** For an index: its child manifests, each with its own facts. */
  children: ManifestFacts[];
}

export type EvidenceKind = 'referrer' | 'cosign-signature' | 'cosign-attestation' | 'cosign-sbom' | 'fallback-index';

/** An evidence manifest found for the subject (by `subject`, cosign tag or fallback index). */
export interface EvidenceItem {
  kind: EvidenceKind;
  digest: string;
  mediaType: string;
  artifactType: string | null;
  annotations: Record<string, string>;
}

export interface Evidence {
  repository: string;
  subject: ManifestFacts;
  items: EvidenceItem[];
  /**
   * Facts later stages add (verified signatures, attestations, SBOM packages, scan
   * results), keyed by the stage that produced them. Rule types read what they need.
   */
  extra: Record<string, unknown>;
}

/**
 * passed: the rule is satisfied. failed: it is not, and the evidence says so.
 * missing: evidence the rule needs has not arrived (yet). error: the rule could not be
 * evaluated (a scanner crash, unreadable trust material); fails closed.
 */
export type RuleStatus = 'passed' | 'failed' | 'missing' | 'error';

export interface RuleResult {
  id: string;
  type: string;
  mode: PolicyMode;
  status: RuleStatus;
  /** One sentence a person can act on. */
  message: string;
  details?: Record<string, unknown>;
}

export type DecisionOutcome = 'admitted' | 'denied' | 'pending';

export interface Decision {
  outcome: DecisionOutcome;
  policy: { name: string; hash: string; mode: PolicyMode };
  results: RuleResult[];
  /** Messages of enforced rules that failed or errored (why it is denied). */
  reasons: string[];
  /** Messages of enforced rules whose evidence is missing (what it waits for). */
  waitingFor: string[];
  /** Messages of warn-mode rules that did not pass (admitted anyway, recorded). */
  warnings: string[];
}

export interface RuleContext {
  now: Date;
  policy: LoadedPolicy;
  /** Results of rules evaluated earlier in the same policy, by id (rules run in document order). */
  earlier: ReadonlyMap<string, RuleResult>;
}

export interface RuleType<R extends RuleBase = RuleBase> {
  type: string;
  /** JSON schema of the rule object (including `id`, `type`, `mode`); enforced with ajv at load. */
  schema: Record<string, unknown>;
  /**
   * Pure: no I/O, no clock but ctx.now. A result may lower its own mode to `warn` (a rule
   * that opts out of failing closed on errors, such as `onError: "warn"`).
   */
  evaluate(rule: R, evidence: Evidence, ctx: RuleContext): Omit<RuleResult, 'id' | 'type' | 'mode'> & { mode?: PolicyMode };
}
