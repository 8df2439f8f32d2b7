/**
 * The seam between the registry and the gate. Every manifest PUT is stored as staged and
 * then handed to `admit`; only an `admitted` decision moves content to committed storage.
 * The registry core ships `admitEverything`; the gate replaces it.
 */
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

export const admitEverything: Admit = async () => ({ outcome: 'admitted' });
