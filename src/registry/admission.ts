/**
 * The seam between the registry and the gate. Every manifest PUT is stored as staged and
 * then handed to `admit`; only an `admitted` decision moves content to committed storage.
 * The registry core ships `admitEverything`; the gate replaces it.
 */
import type { ParsedManifest } from './manifest.js';

export interface AdmissionRequest {
  repository: string;
  digest: string;
  manifest: ParsedManifest;
  tags: string[];
}

export type AdmissionDecision =
  | { outcome: 'admitted' }
  | { outcome: 'denied'; reasons: string[] }
  | { outcome: 'pending'; waitingFor: string[] };

export type Admit = (request: AdmissionRequest) => Promise<AdmissionDecision>;

export const admitEverything: Admit = async () => ({ outcome: 'admitted' });
