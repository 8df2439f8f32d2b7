/**
 * The seam between the registry and the gate. Every manifest PUT is stored as staged and
 * then handed to `admit`; only an `admitted` decision moves content to committed storage.
 * The registry core ships `admitEverything`; the gate replaces it.
 */
import type { Queryable } from '../db/database.js';
import type { ContentLocation } from '../db/metadata.js';
import type { ParsedManifest } from './manifest.js';

export interface AdmissionRequest {
  repository: string;
  digest: string;
  manifest: ParsedManifest;
  /** Bytes of the manifest. */
  size?: number;
  /** The manifest was new in this repository (nothing can have been decided about it yet, or it expired). */
  firstPush?: boolean;
  tags: string[];
  /** Pushed by digest (no tag in the URL): possibly a child an index will bring along. */
  byDigest?: boolean;
  principal?: string | null;
  requestId?: string | null;
  /**
   * Where the manifest's bytes and those of the blobs it references are, as read while storing
   * it (saves reading them again to commit; a commit by another request meanwhile is harmless,
   * commits are idempotent).
   */
  contentLocations?: ReadonlyMap<string, ContentLocation>;
}

export type AdmissionDecision =
  /** `committed`: the gate already made it visible (else the registry commits it). `warnings`: warn-mode findings. */
  | { outcome: 'admitted'; committed?: boolean; warnings?: string[] }
  /** `quarantined`: answer 201 with a Warning instead of 403 (content pushed by digest that an index may still admit). */
  | { outcome: 'denied'; reasons: string[]; quarantined?: boolean }
  | { outcome: 'pending'; waitingFor: string[] };

export type Admit = (request: AdmissionRequest) => Promise<AdmissionDecision>;

/**
 * A verdict reached before the manifest is stored, by a policy that decides from the manifest
 * alone. The registry then stores the manifest committed, with the admission and its audit
 * records, in one transaction: the staged state and the visible switch of the usual path in one
 * step (the decision still comes before anything is visible, and the blobs move first).
 */
export interface EarlyAdmission {
  decision: Extract<AdmissionDecision, { outcome: 'admitted' }>;
  /** In the store transaction, before the manifest's rows are written: the locks the decision takes. */
  beforeStore(tx: Queryable): Promise<void>;
  /**
   * In the store transaction, after the manifest's rows (in the repository `repositoryId`): the
   * admission's row, then waits for the blobs to reach the committed area. Throws
   * EarlyAdmissionDeclined (the transaction rolls back) when the subject turns out to have an
   * admission already.
   */
  afterStore(tx: Queryable, repositoryId: number): Promise<void>;
  /** In the store transaction, after the push's own record: the decision's and the commit's records. */
  record(tx: Queryable): Promise<void>;
  /** Once the transaction has committed. */
  committed(): void;
  /** When it did not commit: resolves once the moves this admission started have ended. */
  abandoned(): Promise<void>;
}

/**
 * Decides before the manifest is stored, or null: store it staged and call `Admit` (the usual
 * path). The registry takes the usual path anyway, after `abandoned`, when the manifest turns
 * out to be in the repository already.
 */
export type AdmitEarly = (request: AdmissionRequest) => Promise<EarlyAdmission | null>;

/** Thrown inside the store transaction to fall back to the usual path (nothing of it is kept). */
export class EarlyAdmissionDeclined extends Error {
  constructor(reason: string) {
    super(`decided the usual way: ${reason}`);
  }
}

export const admitEverything: Admit = async () => ({ outcome: 'admitted' });
