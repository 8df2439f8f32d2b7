/**
 * Data access for admissions: one row per (repository, subject digest) with its state,
 * the tags pushes asked for, the policy that applied (name and content hash) and a result
 * per rule. Writers run inside the gate's transactions, under a per-subject lock.
 */
import { advisoryLock, jsonParam, whereSet, type Database, type Queryable } from './database.js';
import type { Decision, RuleResult } from '../policy/types.js';

export type AdmissionState = 'pending' | 'admitted' | 'denied' | 'expired';

export interface AdmissionRecord {
  id: number;
  repository: string;
  digest: string;
  mediaType: string;
  state: AdmissionState;
  tags: string[];
  policy: { name: string; hash: string; mode: string } | null;
  results: RuleResult[];
  reasons: string[];
  waitingFor: string[];
  warnings: string[];
  /** Signers, attestations and SBOM packages found when it was decided. */
  evidence: Record<string, unknown>;
  pushedBy: string | null;
  admittedWith: string | null;
  evaluations: number;
  createdAt: Date;
  updatedAt: Date;
  decidedAt: Date | null;
}

export interface AdmissionFilter {
  repository?: string;
  digest?: string;
  state?: AdmissionState;
  /** Only ids below this (newest first paging). */
  before?: number;
  limit: number;
}

interface AdmissionRow {
  id: number;
  repository: string;
  digest: string;
  media_type: string;
  state: AdmissionState;
  tags: string[];
  policy_name: string | null;
  policy_hash: string | null;
  policy_mode: string | null;
  results: RuleResult[];
  reasons: string[];
  waiting_for: string[];
  warnings: string[];
  evidence: Record<string, unknown>;
  pushed_by: string | null;
  admitted_with: string | null;
  evaluations: number;
  created_at: Date;
  updated_at: Date;
  decided_at: Date | null;
}

const COLUMNS = `a.id, r.name AS repository, a.digest, a.media_type, a.state, a.tags, a.policy_name, a.policy_hash,
  a.policy_mode, a.results, a.reasons, a.waiting_for, a.warnings, a.evidence, a.pushed_by, a.admitted_with, a.evaluations,
  a.created_at, a.updated_at, a.decided_at`;

function toRecord(row: AdmissionRow): AdmissionRecord {
  return {
    id: row.id,
    repository: row.repository,
    digest: row.digest,
    mediaType: row.media_type,
    state: row.state,
    tags: row.tags,
    policy: row.policy_name ? { name: row.policy_name, hash: row.policy_hash ?? '', mode: row.policy_mode ?? '' } : null,
    results: row.results,
    reasons: row.reasons,
    waitingFor: row.waiting_for,
    warnings: row.warnings,
    evidence: row.evidence ?? {},
    pushedBy: row.pushed_by,
    admittedWith: row.admitted_with,
    evaluations: row.evaluations,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    decidedAt: row.decided_at,
  };
}

/** State, policy (name, hash, mode), results, reasons, waiting for, warnings and evidence, as stored. */
function decisionColumns(decision: Decision, evidence: Record<string, unknown>): unknown[] {
  const state: AdmissionState = decision.outcome;
  return [
    state,
    decision.policy.name,
    decision.policy.hash,
    decision.policy.mode,
    jsonParam(decision.results),
    jsonParam(decision.reasons),
    jsonParam(decision.waitingFor),
    jsonParam(decision.warnings),
    jsonParam(evidence),
  ];
}

/** Lock key space for per-subject advisory locks (the second key is a hash of repository and digest). */
const LOCK_CLASS = 0x6761;

/** The subject of an admission as the push that opens it names it. */
type AdmissionSubject = { repository: string; digest: string; mediaType: string; tags: string[]; pushedBy: string | null };

/**
 * A new admission of a subject, pending or with its first decision ($6, the repository's name, is
 * for the caller's RETURNING); see openParams.
 */
const OPEN_ADMISSION = `INSERT INTO admissions AS a (repository_id, digest, media_type, state, tags, pushed_by, policy_name, policy_hash,
         policy_mode, results, reasons, waiting_for, warnings, evidence, evaluations, decided_at)
  VALUES ($1, $2, $3, COALESCE($7::text, 'pending'), $4, $5, $8::text, $9::text, $10::text, COALESCE($11::jsonb, '[]'),
          COALESCE($12::jsonb, '[]'), COALESCE($13::jsonb, '[]'), COALESCE($14::jsonb, '[]'), COALESCE($15::jsonb, '{}'),
          CASE WHEN $7::text IS NULL THEN 0 ELSE 1 END, CASE WHEN $7::text IN ('admitted', 'denied') THEN now() END)`;

function openParams(
  repositoryId: number,
  subject: AdmissionSubject,
  first?: { decision: Decision; evidence: Record<string, unknown> },
): unknown[] {
  const decided = first ? decisionColumns(first.decision, first.evidence) : null;
  return [repositoryId, subject.digest, subject.mediaType, subject.tags, subject.pushedBy, subject.repository, ...(decided ?? Array(9).fill(null))];
}

export class AdmissionStore {
  constructor(readonly db: Database) {}

  /** Serialises every decision about one subject until the transaction ends. */
  async lockSubject(tx: Queryable, repository: string, digest: string): Promise<void> {
    await advisoryLock(this.db, tx, LOCK_CLASS, `${repository}@${digest}`);
  }

  async get(repository: string, digest: string, q: Queryable = this.db): Promise<AdmissionRecord | null> {
    const rows = await q.query<AdmissionRow>(
      `SELECT ${COLUMNS} FROM admissions a JOIN repositories r ON r.id = a.repository_id WHERE r.name = $1 AND a.digest = $2`,
      [repository, digest],
    );
    return rows.length > 0 ? toRecord(rows[0]) : null;
  }

  async list(filter: AdmissionFilter): Promise<AdmissionRecord[]> {
    const where = whereSet([
      ['r.name = ?', filter.repository],
      ['a.digest = ?', filter.digest],
      ['a.state = ?', filter.state],
      ['a.id < ?', filter.before],
    ]);
    const rows = await this.db.query<AdmissionRow>(
      `SELECT ${COLUMNS} FROM admissions a JOIN repositories r ON r.id = a.repository_id
        WHERE ${where.sql} ORDER BY a.id DESC LIMIT $${where.params.length + 1}`,
      [...where.params, filter.limit],
    );
    return rows.map(toRecord);
  }

  /**
   * Opens the admission, with `first` as its decision when given (pending otherwise), or adds
   * the tags to the existing one, whose decision stays as it was; `created` says which.
   */
  async open(
    tx: Queryable,
    repositoryId: number,
    subject: AdmissionSubject,
    first?: { decision: Decision; evidence: Record<string, unknown> },
  ): Promise<{ record: AdmissionRecord; created: boolean }> {
    const rows = await tx.query<AdmissionRow & { created: boolean }>(
      `${OPEN_ADMISSION}
       ON CONFLICT (repository_id, digest) DO UPDATE
         SET tags = ARRAY(SELECT DISTINCT unnest(a.tags || EXCLUDED.tags)),
             updated_at = now()
       RETURNING ${COLUMNS.replace('r.name AS repository', '$6::text AS repository')}, (xmax = 0) AS created`,
      openParams(repositoryId, subject, first),
    );
    return { record: toRecord(rows[0]), created: rows[0].created };
  }

  /**
   * Opens the admission with `first` as its decision unless the subject has one already (which
   * stays as it was); says whether it did. Reads nothing back: for a caller that knows the
   * record it wrote (the gate's decision before a push is stored).
   */
  async create(
    tx: Queryable,
    repositoryId: number,
    subject: AdmissionSubject,
    first: { decision: Decision; evidence: Record<string, unknown> },
  ): Promise<boolean> {
    const rows = await tx.query(`${OPEN_ADMISSION} ON CONFLICT (repository_id, digest) DO NOTHING RETURNING $6::text AS repository`, openParams(repositoryId, subject, first));
    return rows.length > 0;
  }

  /** Writes a decision onto the admission. */
  async record(tx: Queryable, repositoryId: number, digest: string, decision: Decision, evidence: Record<string, unknown> = {}): Promise<void> {
    await tx.query(
      `UPDATE admissions SET state = $3, policy_name = $4, policy_hash = $5, policy_mode = $6, results = $7,
              reasons = $8, waiting_for = $9, warnings = $10, evidence = $11, evaluations = evaluations + 1,
              updated_at = now(), decided_at = CASE WHEN $3 = 'pending' THEN decided_at ELSE now() END
        WHERE repository_id = $1 AND digest = $2`,
      [repositoryId, digest, ...decisionColumns(decision, evidence)],
    );
  }

  /** Admissions still pending (or denied) whose last change is older than `before`. */
  async stale(state: 'pending' | 'denied', before: Date, limit = 500): Promise<Array<{ repository: string; digest: string }>> {
    return this.db.query<{ repository: string; digest: string }>(
      `SELECT r.name AS repository, a.digest FROM admissions a JOIN repositories r ON r.id = a.repository_id
        WHERE a.state = $1 AND a.updated_at < $2 ORDER BY a.updated_at LIMIT $3`,
      [state, before, limit],
    );
  }

  async setState(tx: Queryable, repositoryId: number, digest: string, state: AdmissionState): Promise<void> {
    await tx.query('UPDATE admissions SET state = $3, updated_at = now() WHERE repository_id = $1 AND digest = $2', [
      repositoryId,
      digest,
      state,
    ]);
  }

  /** Children admitted as part of an index: their own admissions say so. */
  async admitWith(tx: Queryable, repositoryId: number, digests: string[], parent: string): Promise<string[]> {
    if (digests.length === 0) return [];
    // In digest order, as the commit locks content (metadata.ts commitManifests): two indexes
    // that share children admit them side by side on PostgreSQL.
    const rows = await tx.query<{ digest: string }>(
      `WITH locked AS (
         SELECT id FROM admissions WHERE repository_id = $1 AND digest = ANY($2::text[]) AND state <> 'admitted' ORDER BY digest FOR UPDATE)
       UPDATE admissions SET state = 'admitted', admitted_with = $3, updated_at = now(), decided_at = now()
        WHERE id IN (SELECT id FROM locked) RETURNING digest`,
      [repositoryId, digests, parent],
    );
    return rows.map((r) => r.digest);
  }
}
