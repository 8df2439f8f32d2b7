/**
 * Parsing and validation of pushed manifests (OCI image manifest and index, Docker
 * schema 2 manifest and manifest list, and artifact manifests). The bytes are never
 * re-serialised: we parse to learn what the manifest references, and store what was sent.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { RegistryError } from './errors.js';
import { MANIFEST_KINDS, MEDIA_TYPES, type ManifestKind } from './mediatypes.js';
import { parseDigest } from './names.js';
import type { ManifestReference } from '../db/metadata.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Record<string, unknown>;
}

export interface ParsedManifest {
  mediaType: string;
  kind: ManifestKind;
  /** What readers list as this manifest's type in the referrers API. */
  artifactType: string | null;
  subject: Descriptor | null;
  annotations: Record<string, string> | null;
  references: ManifestReference[];
  /** Descriptors the registry must find before accepting the manifest (no external `urls`). */
  required: Array<{ digest: string; kind: ManifestReference['kind'] }>;
  config: Descriptor | null;
  layers: Descriptor[];
  manifests: Descriptor[];
}

const annotations = { type: 'object', additionalProperties: { type: 'string' } } as const;
const descriptor = {
  type: 'object',
  required: ['mediaType', 'digest', 'size'],
  properties: {
    mediaType: { type: 'string', minLength: 1 },
    digest: { type: 'string' },
    // int64 in the spec; beyond 2^53 a JSON number is no longer exact here.
    size: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    urls: { type: 'array', items: { type: 'string' } },
    annotations,
    artifactType: { type: 'string' },
    data: { type: 'string' },
    platform: { type: 'object' },
  },
} as const;

const imageSchema = {
  type: 'object',
  required: ['schemaVersion', 'config', 'layers'],
  properties: {
    schemaVersion: { const: 2 },
    mediaType: { type: 'string' },
    artifactType: { type: 'string' },
    config: descriptor,
    layers: { type: 'array', items: descriptor },
    subject: descriptor,
    annotations,
  },
} as const;

const indexSchema = {
  type: 'object',
  required: ['schemaVersion', 'manifests'],
  properties: {
    schemaVersion: { const: 2 },
    mediaType: { type: 'string' },
    artifactType: { type: 'string' },
    manifests: { type: 'array', items: descriptor },
    subject: descriptor,
    annotations,
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const validators = { image: ajv.compile(imageSchema), index: ajv.compile(indexSchema) };

function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`).join('; ');
}

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, { detail });
}

/** Decides the manifest's media type from its `mediaType` field and the request's Content-Type. */
function resolveMediaType(doc: Record<string, unknown>, contentType: string | undefined): string {
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (declared && contentType && declared !== contentType) {
    throw invalid(`manifest mediaType ${declared} does not match Content-Type ${contentType}`);
  }
  const mediaType = declared ?? contentType;
  if (mediaType === MEDIA_TYPES.dockerSchema1 || mediaType === MEDIA_TYPES.dockerSchema1Signed || doc.schemaVersion === 1) {
    throw invalid('Docker schema 1 manifests are not supported; push with a schema 2 or OCI client');
  }
  if (mediaType) return mediaType;
  if ('manifests' in doc) return MEDIA_TYPES.ociIndex;
  if ('config' in doc) return MEDIA_TYPES.ociManifest;
  throw invalid('manifest has no mediaType and the request has no Content-Type');
}

function checkDescriptorDigests(descriptors: Descriptor[], where: string): void {
  descriptors.forEach((d, i) => {
    try {
      parseDigest(d.digest);
    } catch {
      throw invalid(`${where}[${i}].digest is not a valid digest: ${JSON.stringify(d.digest.slice(0, 200))}`);
    }
  });
}

/** Whether a parsed JSON value holds U+0000 in any string or key (PostgreSQL text cannot). */
function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([key, member]) => key.includes('\0') || hasNul(member));
  }
  return false;
}

/** The blobs a manifest references (config and layers, not index children): what its commit makes committed with it. */
export function contentDigestsOf(manifest: Pick<ParsedManifest, 'references'>): string[] {
  return manifest.references.filter((r) => r.kind !== 'manifest').map((r) => r.digest);
}

export function parseManifest(body: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw invalid(`manifest is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid('manifest must be a JSON object');
  if (hasNul(doc)) throw invalid('manifest contains a NUL character (\\u0000), which the registry cannot store');
  const record = doc as Record<string, unknown>;
  const mediaType = resolveMediaType(record, contentType);
  const kind = MANIFEST_KINDS[mediaType];
  if (!kind) throw invalid(`unsupported manifest media type: ${mediaType}`);
  const validate = validators[kind];
  if (!validate(record)) throw invalid(`invalid ${mediaType}: ${describeErrors(validate.errors)}`);

  const subject = (record.subject as Descriptor | undefined) ?? null;
  const artifactTypeField = typeof record.artifactType === 'string' ? record.artifactType : null;
  const annotationsField = (record.annotations as Record<string, string> | undefined) ?? null;
  if (subject) checkDescriptorDigests([subject], 'subject');

  if (kind === 'image') {
    const config = record.config as Descriptor;
    const layers = record.layers as Descriptor[];
    checkDescriptorDigests([config], 'config');
    checkDescriptorDigests(layers, 'layers');
    const references: ManifestReference[] = [
      { digest: config.digest, kind: 'config' },
      ...layers.map((l) => ({ digest: l.digest, kind: 'layer' as const })),
    ];
    const required = [
      { digest: config.digest, kind: 'config' as const },
      ...layers.filter((l) => !l.urls || l.urls.length === 0).map((l) => ({ digest: l.digest, kind: 'layer' as const })),
    ];
    return {
      mediaType,
      kind,
      artifactType: artifactTypeField ?? config.mediaType,
      subject,
      annotations: annotationsField,
      references,
      required,
      config,
      layers,
      manifests: [],
    };
  }

  const manifests = record.manifests as Descriptor[];
  checkDescriptorDigests(manifests, 'manifests');
  const references = manifests.map((m) => ({ digest: m.digest, kind: 'manifest' as const }));
  return {
    mediaType,
    kind,
    artifactType: artifactTypeField,
    subject,
    annotations: annotationsField,
    references,
    required: references,
    config: null,
    layers: [],
    manifests,
  };
}
