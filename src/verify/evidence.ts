/**
 * Verifies what evidence manifests carry, offline, with @sigstore/verify: cosign simple-
 * signing signatures (`.sig` tags and referrers), DSSE attestations (`.att`), and Sigstore
 * bundles (v0.1–v0.3 referrers, message signatures and DSSE). Keys come from the policy;
 * every check says what was found and why it does not count. The results are facts for the
 * rules (which stay pure): who signed, which digest, which statement.
 */
import { createHash, verify as cryptoVerify } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';
import type { ParsedManifest } from '../registry/manifest.js';
import { sbomFormat, sbomPackages, type SbomPackage } from '../sbom/packages.js';
import { shortId, type TrustedKey } from './keys.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const DSSE_ENVELOPE = 'application/vnd.dsse.envelope.v1+json';
const COSIGN_SIGNATURE = 'dev.cosignproject.cosign/signature';
const IN_TOTO = 'application/vnd.in-toto+json';
/** cosign 3 signs images as a DSSE statement with this predicate. */
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

export interface Signer {
  /** Keyed: the policy's name for the key and its id. */
  keyRef?: string;
  keyId?: string;
  /** Keyless: the certificate's subject (SAN) and OIDC issuer, and the trusted root that vouched for it. */
  identity?: { subject: string; issuer: string; claims?: Record<string, string> };
  root?: string;
  /** A transparency-log entry verified with the signature. */
  tlog: boolean;
  /** A verified timestamp (Rekor SET with integrated time, or RFC 3161). */
  timestamp: boolean;
}

/** What a policy trusts: its keys and its trusted roots (Fulcio, Rekor, CT logs, TSAs). */
export interface PolicyTrust {
  keys: TrustedKey[];
  roots: Array<{ ref: string; root: TrustedRoot }>;
}

/** Who a signer is, in one line: the key, or the identity and issuer. */
export function signerName(signer: Signer): string {
  return signer.keyRef ? `${signer.keyRef} (${shortId(signer.keyId ?? '')})` : `${signer.identity?.subject} (issuer ${signer.identity?.issuer})`;
}

/** Distinct signers are distinct keys or distinct identities. */
export function signerKey(signer: Signer): string {
  return signer.keyId ?? `${signer.identity?.issuer} ${signer.identity?.subject}`;
}

export interface SignatureCheck {
  /** The evidence manifest it came from. */
  source: string;
  signer: Signer | null;
  /** The digest the signature binds (docker-manifest-digest or the statement subject). */
  digest: string | null;
  /** `critical.identity.docker-reference` of a simple-signing payload. */
  dockerReference: string | null;
  problem: string | null;
}

export interface AttestationCheck {
  source: string;
  signer: Signer | null;
  predicateType: string | null;
  subjects: string[];
  /** The normalized package list when the predicate is an SBOM. */
  packages: SbomPackage[] | null;
  predicate: unknown;
  problem: string | null;
}

export interface VerifiedEvidence {
  signatures: SignatureCheck[];
  attestations: AttestationCheck[];
}

export interface EvidenceSource {
  digest: string;
  manifest: ParsedManifest;
  /** Reads one of the manifest's blobs (bounded). */
  read(digest: string): Promise<Buffer>;
}

const EMPTY_ROOT = TrustedRoot.fromJSON({
  mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
});

type Bundle = ReturnType<typeof bundleFromJSON>;

/** Whether the bundle also verifies with a transparency-log entry, and with a timestamp. */
function extras(verify: (options: { tlogThreshold: number; timestampThreshold: number }) => void): { tlog: boolean; timestamp: boolean } {
  const passes = (options: { tlogThreshold: number; timestampThreshold: number }) => {
    try {
      verify(options);
      return true;
    } catch {
      return false;
    }
  };
  return { tlog: passes({ tlogThreshold: 1, timestampThreshold: 0 }), timestamp: passes({ tlogThreshold: 0, timestampThreshold: 1 }) };
}

/** Keyed: tries each trusted key (with the policy's first trusted root for tlog and timestamps). */
function verifyKeyed(bundle: Bundle, trust: PolicyTrust, artifact?: Buffer): { signer: Signer | null; problem: string | null } {
  const { keys } = trust;
  if (keys.length === 0) return { signer: null, problem: 'the policy trusts no keys' };
  const root = trust.roots[0]?.root ?? EMPTY_ROOT;
  let lastError = '';
  for (const trusted of keys) {
    const named = { keyRef: trusted.ref, keyId: trusted.id };
    if (trusted.key.asymmetricKeyType === 'ed25519') {
      if (verifyEd25519(bundle, trusted, artifact)) return { signer: { ...named, tlog: false, timestamp: false }, problem: null };
      lastError = 'signature verification failed';
      continue;
    }
    const trustMaterial = toTrustMaterial(root, () => ({ publicKey: trusted.key, validFor: () => true }));
    const verify = (o: { tlogThreshold: number; timestampThreshold: number }) =>
      new Verifier(trustMaterial, { ...o, ctlogThreshold: 0 }).verify(toSignedEntity(bundle, artifact));
    try {
      verify({ tlogThreshold: 0, timestampThreshold: 0 });
      return { signer: { ...named, ...extras(verify) }, problem: null };
    } catch (err) {
      lastError = (err as Error).message;
    }
  }
  return { signer: null, problem: `not signed by any trusted key (${keys.map((k) => `${k.ref} ${shortId(k.id)}`).join(', ')}): ${lastError}` };
}

/**
 * Keyless: the certificate must chain to a trusted root's Fulcio CA at a verified time
 * (a timestamp is required for that), with its SCTs where the root lists CT logs.
 */
function verifyKeyless(bundle: Bundle, trust: PolicyTrust, artifact?: Buffer): { signer: Signer | null; problem: string | null } {
  if (trust.roots.length === 0) return { signer: null, problem: 'a keyless (certificate) signature, and the policy names no trusted root' };
  let lastError = '';
  for (const { ref, root } of trust.roots) {
    const trustMaterial = toTrustMaterial(root);
    const ctlogThreshold = root.ctlogs.length > 0 ? 1 : 0;
    const verify = (o: { tlogThreshold: number; timestampThreshold: number }) =>
      new Verifier(trustMaterial, { ...o, ctlogThreshold }).verify(toSignedEntity(bundle, artifact));
    try {
      const signer = verify({ tlogThreshold: 0, timestampThreshold: 1 });
      const identity = {
        subject: signer.identity?.subjectAlternativeName ?? '',
        issuer: signer.identity?.extensions?.issuer ?? '',
        claims: fulcioClaims(signer.identity?.oids ?? []),
      };
      return { signer: { identity, root: ref, ...extras(verify), timestamp: true }, problem: null };
    } catch (err) {
      lastError = (err as Error).message;
    }
  }
  return { signer: null, problem: `the certificate does not verify against ${trust.roots.map((r) => r.ref).join(', ')}: ${lastError}` };
}

/** Fulcio's workflow claims by name: the current DER-encoded OIDs, else the legacy raw ones. */
const CLAIMS: Record<string, { current: string; legacy?: string; legacyPrefix?: string }> = {
  buildSignerURI: { current: '1.3.6.1.4.1.57264.1.9' },
  sourceRepositoryURI: { current: '1.3.6.1.4.1.57264.1.12', legacy: '1.3.6.1.4.1.57264.1.5', legacyPrefix: 'https://github.com/' },
  sourceRepositoryDigest: { current: '1.3.6.1.4.1.57264.1.13', legacy: '1.3.6.1.4.1.57264.1.3' },
  sourceRepositoryRef: { current: '1.3.6.1.4.1.57264.1.14', legacy: '1.3.6.1.4.1.57264.1.6' },
  buildTrigger: { current: '1.3.6.1.4.1.57264.1.20', legacy: '1.3.6.1.4.1.57264.1.2' },
  runInvocationURI: { current: '1.3.6.1.4.1.57264.1.21' },
};

export function fulcioClaims(oids: Array<{ oid?: { id: number[] }; value: Uint8Array }>): Record<string, string> {
  const raw = new Map<string, Buffer>();
  for (const o of oids) if (o.oid) raw.set(o.oid.id.join('.'), Buffer.from(o.value));
  const utf8String = (b: Buffer) => (b[0] === 0x0c && b[1] === b.length - 2 ? b.subarray(2).toString('utf8') : null);
  const claims: Record<string, string> = {};
  for (const [name, where] of Object.entries(CLAIMS)) {
    const current = raw.get(where.current);
    const decoded = current ? utf8String(current) : null;
    if (decoded !== null) claims[name] = decoded;
    else if (where.legacy && raw.has(where.legacy)) claims[name] = (where.legacyPrefix ?? '') + (raw.get(where.legacy) as Buffer).toString('utf8');
  }
  return claims;
}

function verifySigner(bundle: Bundle, trust: PolicyTrust, artifact?: Buffer): { signer: Signer | null; problem: string | null } {
  return bundle.verificationMaterial.content.$case === 'publicKey' ? verifyKeyed(bundle, trust, artifact) : verifyKeyless(bundle, trust, artifact);
}

/**
 * Ed25519 signs the message itself (no prehash), which @sigstore/verify's keyed path does
 * not do; the same checks by hand: the message, or DSSE's pre-authentication encoding.
 */
function verifyEd25519(bundle: ReturnType<typeof bundleFromJSON>, trusted: TrustedKey, artifact?: Buffer): boolean {
  if (bundle.content.$case === 'messageSignature') {
    return artifact !== undefined && cryptoVerify(null, artifact, trusted.key, bundle.content.messageSignature.signature);
  }
  const env = bundle.content.dsseEnvelope;
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(env.payloadType)} ${env.payloadType} ${env.payload.length} `), env.payload]);
  return env.signatures.some((s) => cryptoVerify(null, pae, trusted.key, s.sig));
}

/** Legacy cosign annotations on a signature layer: certificate (keyless), Rekor SET, RFC 3161 timestamp. */
interface LegacyMaterial {
  certificate?: string;
  rekorBundle?: string;
  rfc3161?: string;
}

/** cosign's `dev.sigstore.cosign/bundle` (a Rekor entry with its SET) as a bundle tlog entry. */
function tlogEntryFromLegacy(json: string) {
  const legacy = JSON.parse(json) as { SignedEntryTimestamp: string; Payload: { body: string; integratedTime: number; logIndex: number; logID: string } };
  const body = JSON.parse(Buffer.from(legacy.Payload.body, 'base64').toString('utf8')) as { kind: string; apiVersion: string };
  return {
    logIndex: String(legacy.Payload.logIndex),
    logId: { keyId: Buffer.from(legacy.Payload.logID, 'hex').toString('base64') },
    kindVersion: { kind: body.kind, version: body.apiVersion },
    integratedTime: String(legacy.Payload.integratedTime),
    inclusionPromise: { signedEntryTimestamp: legacy.SignedEntryTimestamp },
    canonicalizedBody: legacy.Payload.body,
  };
}

function pemToDerBase64(pem: string): string {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw new Error('the certificate annotation holds no PEM certificate');
  return match[1].replace(/\s+/g, '');
}

/**
 * A simple-signing signature as a bundle: keyed, or keyless with its leaf certificate (the
 * chain annotation is never trusted: the CA chain comes from the trusted root), with the
 * Rekor entry and timestamp cosign recorded. v0.1 allows SET-only tlog entries.
 */
function legacyMaterial(legacy: LegacyMaterial) {
  const tlogEntries = legacy.rekorBundle ? [tlogEntryFromLegacy(legacy.rekorBundle)] : [];
  const timestamps = legacy.rfc3161
    ? { timestampVerificationData: { rfc3161Timestamps: [{ signedTimestamp: (JSON.parse(legacy.rfc3161) as { SignedRFC3161Timestamp: string }).SignedRFC3161Timestamp }] } }
    : {};
  const keyOrCert = legacy.certificate
    ? { x509CertificateChain: { certificates: [{ rawBytes: pemToDerBase64(legacy.certificate) }] } }
    : { publicKey: { hint: '' } };
  return {
    mediaType: legacy.certificate || tlogEntries.length > 0 ? 'application/vnd.dev.sigstore.bundle+json;version=0.1' : 'application/vnd.dev.sigstore.bundle.v0.3+json',
    verificationMaterial: { ...keyOrCert, tlogEntries, ...timestamps },
  };
}

function messageBundle(signature: string, payload: Buffer, legacy: LegacyMaterial = {}) {
  return bundleFromJSON({
    ...legacyMaterial(legacy),
    messageSignature: { messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(payload).digest('base64') }, signature },
  });
}

function dsseBundle(envelope: { payload: string; payloadType: string; signatures: Array<{ sig: string; keyid?: string }> }, legacy: LegacyMaterial = {}) {
  return bundleFromJSON({
    ...legacyMaterial(legacy),
    dsseEnvelope: { payload: envelope.payload, payloadType: envelope.payloadType, signatures: envelope.signatures.map((s) => ({ sig: s.sig, keyid: s.keyid ?? '' })) },
  });
}

/** Simple-signing payload: which digest and reference it vouches for. */
function simpleSigning(payload: Buffer): { digest: string | null; dockerReference: string | null; problem: string | null } {
  let doc: { critical?: { type?: string; image?: Record<string, unknown>; identity?: Record<string, unknown> } };
  try {
    doc = JSON.parse(payload.toString('utf8')) as typeof doc;
  } catch {
    return { digest: null, dockerReference: null, problem: 'the signed payload is not JSON' };
  }
  const critical = doc.critical;
  if (critical?.type !== 'cosign container image signature') {
    return { digest: null, dockerReference: null, problem: `the signed payload is not a cosign container image signature (type ${JSON.stringify(critical?.type)})` };
  }
  const digest = typeof critical.image?.['docker-manifest-digest'] === 'string' ? (critical.image['docker-manifest-digest'] as string) : null;
  const reference = typeof critical.identity?.['docker-reference'] === 'string' ? (critical.identity['docker-reference'] as string) : null;
  return { digest, dockerReference: reference, problem: digest ? null : 'the signed payload names no docker-manifest-digest' };
}

interface Statement {
  predicateType: string | null;
  subjects: string[];
  predicate: unknown;
  problem: string | null;
}

function statementOf(payloadType: string, payloadB64: string): Statement {
  if (payloadType !== IN_TOTO) return { predicateType: null, subjects: [], predicate: null, problem: `payload type ${payloadType} is not an in-toto statement` };
  let doc: { _type?: string; predicateType?: unknown; subject?: unknown; predicate?: unknown };
  try {
    doc = JSON.parse(Buffer.from(payloadB64, 'base64').toString('utf8')) as typeof doc;
  } catch {
    return { predicateType: null, subjects: [], predicate: null, problem: 'the statement is not JSON' };
  }
  if (doc._type !== 'https://in-toto.io/Statement/v0.1' && doc._type !== 'https://in-toto.io/Statement/v1') {
    return { predicateType: null, subjects: [], predicate: null, problem: `unknown statement type ${JSON.stringify(doc._type)}` };
  }
  const subjects = (Array.isArray(doc.subject) ? doc.subject : [])
    .flatMap((s: { digest?: Record<string, unknown> }) => Object.entries(s?.digest ?? {}).map(([alg, hex]) => `${alg}:${String(hex)}`));
  return { predicateType: typeof doc.predicateType === 'string' ? doc.predicateType : null, subjects, predicate: doc.predicate, problem: null };
}

function packagesOf(predicate: unknown): SbomPackage[] | null {
  if (!sbomFormat(predicate)) return null;
  try {
    return sbomPackages(predicate);
  } catch {
    return null;
  }
}

function isBundleType(mediaType: string): boolean {
  return mediaType === 'application/vnd.dev.sigstore.bundle.v0.3+json' || /^application\/vnd\.dev\.sigstore\.bundle\+json;version=0\.[12]$/.test(mediaType);
}

/**
 * Checks every signature and attestation an evidence manifest carries. `subjectBytes` are the
 * subject manifest's bytes (what a message-signature bundle signs).
 */
export async function verifyEvidenceManifest(source: EvidenceSource, trust: PolicyTrust, subjectBytes: Buffer): Promise<VerifiedEvidence> {
  const out: VerifiedEvidence = { signatures: [], attestations: [] };
  for (const layer of source.manifest.layers) {
    if (layer.mediaType === SIMPLE_SIGNING) {
      const signature = layer.annotations?.[COSIGN_SIGNATURE];
      const payload = await source.read(layer.digest);
      if (!signature) {
        out.signatures.push({ source: source.digest, signer: null, digest: null, dockerReference: null, problem: 'a simple-signing layer without a signature annotation' });
        continue;
      }
      const legacy: LegacyMaterial = {
        certificate: layer.annotations?.['dev.sigstore.cosign/certificate'],
        rekorBundle: layer.annotations?.['dev.sigstore.cosign/bundle'],
        rfc3161: layer.annotations?.['dev.sigstore.cosign/rfc3161timestamp'],
      };
      let verified: { signer: Signer | null; problem: string | null };
      try {
        verified = verifySigner(messageBundle(signature, payload, legacy), trust, payload);
      } catch (err) {
        verified = { signer: null, problem: `unreadable cosign signature material: ${(err as Error).message}` };
      }
      const claims = simpleSigning(payload);
      out.signatures.push({ source: source.digest, signer: verified.signer, digest: claims.digest, dockerReference: claims.dockerReference, problem: verified.problem ?? claims.problem });
    } else if (layer.mediaType === DSSE_ENVELOPE) {
      const envelope = JSON.parse((await source.read(layer.digest)).toString('utf8')) as Parameters<typeof dsseBundle>[0];
      const legacy: LegacyMaterial = { certificate: layer.annotations?.['dev.sigstore.cosign/certificate'], rekorBundle: layer.annotations?.['dev.sigstore.cosign/bundle'] };
      let verified: { signer: Signer | null; problem: string | null };
      try {
        verified = verifySigner(dsseBundle(envelope, legacy), trust);
      } catch (err) {
        verified = { signer: null, problem: `unreadable cosign attestation material: ${(err as Error).message}` };
      }
      out.attestations.push(attestation(source.digest, verified, statementOf(envelope.payloadType, envelope.payload)));
    } else if (isBundleType(layer.mediaType)) {
      let bundle: ReturnType<typeof bundleFromJSON>;
      try {
        bundle = bundleFromJSON(JSON.parse((await source.read(layer.digest)).toString('utf8')));
      } catch (err) {
        out.signatures.push({ source: source.digest, signer: null, digest: null, dockerReference: null, problem: `not a valid Sigstore bundle: ${(err as Error).message}` });
        continue;
      }
      if (bundle.content.$case === 'dsseEnvelope') {
        const env = bundle.content.dsseEnvelope;
        const verified = verifySigner(bundle, trust);
        const statement = statementOf(env.payloadType, env.payload.toString('base64'));
        if (statement.predicateType === COSIGN_SIGN_PREDICATE) {
          out.signatures.push({ source: source.digest, signer: verified.signer, digest: statement.subjects[0] ?? null, dockerReference: null, problem: verified.problem ?? statement.problem });
        } else {
          out.attestations.push(attestation(source.digest, verified, statement));
        }
      } else {
        const verified = verifySigner(bundle, trust, subjectBytes);
        const digest = `sha256:${createHash('sha256').update(subjectBytes).digest('hex')}`;
        out.signatures.push({ source: source.digest, signer: verified.signer, digest: verified.problem ? null : digest, dockerReference: null, problem: verified.problem });
      }
    }
  }
  return out;
}

function attestation(source: string, verified: { signer: Signer | null; problem: string | null }, statement: Statement): AttestationCheck {
  return {
    source,
    signer: verified.signer,
    predicateType: statement.predicateType,
    subjects: statement.subjects,
    packages: packagesOf(statement.predicate),
    predicate: statement.predicate,
    problem: verified.problem ?? statement.problem,
  };
}
