/**
 * Public keys a policy trusts, read from the policy directory (never outside it): ECDSA
 * P-256/P-384, RSA and Ed25519 in PEM. Each gets an id, `SHA256:<hex>` of its SPKI DER,
 * so that results can say exactly which key signed.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { TrustedRoot } from '@sigstore/protobuf-specs';

export interface TrustedKey {
  /** As the policy names it, e.g. `keys/ci.pub`. */
  ref: string;
  id: string;
  key: KeyObject;
}

export function keyIdOf(key: KeyObject): string {
  return `SHA256:${createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

/** Loads `ref` relative to `dir`; throws with a message a policy author can act on. */
/** The file `ref` names inside the policy directory; never a path outside it. */
function insidePolicyDir(dir: string, ref: string, what: string): string {
  const file = path.resolve(dir, ref);
  const relative = path.relative(dir, file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) throw new Error(`${what} ${ref} is outside the policy directory`);
  return file;
}

export function loadTrustedKey(dir: string, ref: string): TrustedKey {
  const file = insidePolicyDir(dir, ref, 'key');
  let key: KeyObject;
  try {
    key = createPublicKey(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read public key ${ref}: ${(err as Error).message}`);
  }
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const supported = type === 'rsa' || type === 'ed25519' || (type === 'ec' && (curve === 'prime256v1' || curve === 'secp384r1'));
  if (!supported) throw new Error(`key ${ref} is ${type}${curve ? ` ${curve}` : ''}; supported are ECDSA P-256/P-384, RSA and Ed25519`);
  return { ref, id: keyIdOf(key), key };
}

export function shortId(id: string): string {
  return id.slice(0, 'SHA256:'.length + 16);
}

/** Reads a Sigstore `trusted_root.json` (Fulcio CAs, Rekor and CT log keys, TSAs) from the policy directory. */
export function loadTrustedRoot(dir: string, ref: string): TrustedRoot {
  const file = insidePolicyDir(dir, ref, 'trusted root');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read trusted root ${ref}: ${(err as Error).message}`);
  }
  const root = TrustedRoot.fromJSON(json);
  if (root.certificateAuthorities.length === 0) throw new Error(`trusted root ${ref} lists no certificate authorities`);
  return root;
}
