/**
 * Grammar of repository names, tags and digests (OCI distribution spec §"pulling manifests").
 * Everything that reaches storage or the database from a URL passes through here first.
 */
import { RegistryError } from './errors.js';

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Longest repository name we accept; clients cap host/name at 255 characters. */
export const MAX_NAME_LENGTH = 200;

export type DigestAlgorithm = 'sha256' | 'sha512';
export const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** Upload session ids are UUIDs, as the gateway makes them (the database's uuid type takes nothing else). */
export const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
  /** `algorithm:hex` */
  value: string;
}

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function assertName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError('NAME_INVALID', `invalid repository name: ${JSON.stringify(name.slice(0, 300))}`, {
      detail: { name: name.slice(0, 300) },
    });
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function assertTag(tag: string): string {
  if (!isValidTag(tag)) {
    throw new RegistryError('TAG_INVALID', `invalid tag: ${JSON.stringify(tag.slice(0, 200))}`, {
      status: 400,
      detail: { tag: tag.slice(0, 200) },
    });
  }
  return tag;
}

export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':');
}

/**
 * Parses a digest, accepting only algorithms we can verify (sha256, sha512) with
 * lowercase hex of the right length. Anything else is DIGEST_INVALID (400), never a 500.
 */
export function parseDigest(input: string): Digest {
  const match = DIGEST_RE.exec(input);
  if (!match) throw new RegistryError('DIGEST_INVALID', `invalid digest: ${JSON.stringify(input.slice(0, 200))}`);
  const algorithm = match[1];
  const hex = match[2];
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm: ${algorithm.slice(0, 50)}`);
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new RegistryError('DIGEST_INVALID', `invalid ${algorithm} digest: ${JSON.stringify(input.slice(0, 200))}`);
  }
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function isValidDigest(input: string): boolean {
  try {
    parseDigest(input);
    return true;
  } catch {
    return false;
  }
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

export function parseReference(reference: string): Reference {
  if (looksLikeDigest(reference)) return { kind: 'digest', digest: parseDigest(reference) };
  if (!isValidTag(reference)) {
    throw new RegistryError('MANIFEST_INVALID', `invalid reference: ${JSON.stringify(reference.slice(0, 200))}`, {
      status: 400,
      detail: { reference: reference.slice(0, 200) },
    });
  }
  return { kind: 'tag', tag: reference };
}

export function parseAlgorithm(input: string): DigestAlgorithm {
  if (input === 'sha256' || input === 'sha512') return input;
  throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm: ${JSON.stringify(input.slice(0, 50))}`);
}

/** The referrers fallback tag for a digest (distribution-spec main: alg ≤32, encoded ≤64 chars). */
export function fallbackTag(digest: Digest): string {
  return `${digest.algorithm.slice(0, 32)}-${digest.hex.slice(0, 64)}`;
}

/** `sha256:` and the first 12 hex digits, for messages people read. */
export function shortDigest(digest: string): string {
  return digest.slice(0, digest.indexOf(':') + 13);
}
