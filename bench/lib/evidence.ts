/** Signed evidence as cosign writes it (simple-signing `.sig`, DSSE `.att`), for the admission benchmark. */
import { sign, type KeyObject } from 'node:crypto';
import { sha256 } from './client.js';

export interface EvidenceManifest {
  manifest: Buffer;
  blobs: Buffer[];
}

const EMPTY_CONFIG = Buffer.from('{}');

function manifestOf(layers: Array<{ mediaType: string; blob: Buffer; annotations: Record<string, string> }>): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(EMPTY_CONFIG), size: EMPTY_CONFIG.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: sha256(l.blob), size: l.blob.length, annotations: l.annotations })),
  }));
}

export function cosignSignature(key: KeyObject, digest: string, reference: string): EvidenceManifest {
  const payload = Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': reference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' }, optional: null }));
  const signature = sign('sha256', payload, key).toString('base64');
  return {
    manifest: manifestOf([{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', blob: payload, annotations: { 'dev.cosignproject.cosign/signature': signature } }]),
    blobs: [EMPTY_CONFIG, payload],
  };
}

export function sbomAttestation(key: KeyObject, digest: string, packages: number): EvidenceManifest {
  const predicate = {
    spdxVersion: 'SPDX-2.3', SPDXID: 'SPDXRef-DOCUMENT', name: 'bench', creationInfo: { created: new Date().toISOString(), creators: ['Tool: bench'] },
    packages: Array.from({ length: packages }, (_, i) => ({ name: `pkg-${i}`, SPDXID: `SPDXRef-${i}`, versionInfo: `1.${i}.0`, licenseConcluded: 'MIT' })),
  };
  const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'bench', digest: { sha256: digest.split(':')[1] } }], predicateType: 'https://spdx.dev/Document', predicate }));
  const type = 'application/vnd.in-toto+json';
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${statement.length} `), statement]);
  const envelope = Buffer.from(JSON.stringify({ payloadType: type, payload: statement.toString('base64'), signatures: [{ keyid: '', sig: sign('sha256', pae, key).toString('base64') }] }));
  return {
    manifest: manifestOf([{ mediaType: 'application/vnd.dsse.envelope.v1+json', blob: envelope, annotations: { predicateType: 'https://spdx.dev/Document' } }]),
    blobs: [EMPTY_CONFIG, envelope],
  };
}
