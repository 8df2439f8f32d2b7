/**
 * What the gate knows about a subject: its facts (media type, sizes, annotations, labels,
 * platforms, children) read from the registry, and the evidence manifests that refer to
 * it (OCI `subject`, cosign `sha256-<hex>.sig|.att|.sbom` tags, `sha256-<hex>` fallback
 * indexes). Reads go through the registry with a full view: the gate sees quarantine.
 */
import { contentDigestsOf, parseManifest, type ParsedManifest } from '../registry/manifest.js';
import { MEDIA_TYPES } from '../registry/mediatypes.js';
import { isValidDigest } from '../registry/names.js';
import type { Registry } from '../registry/registry.js';
import type { EvidenceItem, EvidenceKind, ManifestFacts, Platform } from '../policy/types.js';

/** Image configs above this are not parsed for labels and platform (they are metadata, not layers). */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** Index nesting the gate follows; deeper trees are refused rather than walked without end. */
const MAX_DEPTH = 4;

const COSIGN_TAG = /^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})\.(sig|att|sbom)$/;
const FALLBACK_TAG = /^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})$/;
const COSIGN_KINDS: Record<string, EvidenceKind> = { sig: 'cosign-signature', att: 'cosign-attestation', sbom: 'cosign-sbom' };

export type Role = { kind: 'subject' } | { kind: 'evidence'; subject: string; evidenceKind: EvidenceKind };

/**
 * Whether a pushed manifest is evidence about another one, and about which. A manifest
 * pushed with an ordinary tag is always a subject, `subject` field or not: readers pull
 * tags, so what a tag names must pass a policy itself, never ride on another's admission.
 */
export function classify(manifest: ParsedManifest, tags: string[]): Role {
  if (tags.some((t) => !COSIGN_TAG.test(t) && !FALLBACK_TAG.test(t))) return { kind: 'subject' };
  if (manifest.subject && isValidDigest(manifest.subject.digest)) {
    return { kind: 'evidence', subject: manifest.subject.digest, evidenceKind: 'referrer' };
  }
  for (const tag of tags) {
    const cosign = COSIGN_TAG.exec(tag);
    if (cosign) return { kind: 'evidence', subject: `${cosign[1]}:${cosign[2]}`, evidenceKind: COSIGN_KINDS[cosign[3]] };
    const fallback = FALLBACK_TAG.exec(tag);
    if (fallback && manifest.kind === 'index') {
      return { kind: 'evidence', subject: `${fallback[1]}:${fallback[2]}`, evidenceKind: 'fallback-index' };
    }
  }
  return { kind: 'subject' };
}

export function cosignTags(subject: string): string[] {
  const [alg, hex] = subject.split(':');
  return ['sig', 'att', 'sbom'].map((suffix) => `${alg}-${hex}.${suffix}`);
}

/** One manifest of a commit: its digest and the blobs (config, layers) it needs. */
export interface ManifestNode {
  digest: string;
  contentDigests: string[];
}

export interface SubjectTree {
  facts: ManifestFacts;
  /** The subject and its children, children first (the order they are committed in). */
  nodes: ManifestNode[];
}

export class EvidenceReader {
  constructor(private readonly registry: Registry) {}

  async parsed(repository: string, digest: string): Promise<{ manifest: ParsedManifest; size: number }> {
    const { record, body } = await this.registry.getManifest(repository, digest);
    return { manifest: parseManifest(body, record.mediaType), size: body.length };
  }

  /** Facts of a subject and the manifests a commit of it must include. */
  async subjectTree(repository: string, digest: string, known?: { manifest: ParsedManifest; size: number }, depth = 0): Promise<SubjectTree> {
    if (depth > MAX_DEPTH) throw new Error(`index nesting deeper than ${MAX_DEPTH} levels at ${digest}`);
    const { manifest, size } = known ?? (await this.parsed(repository, digest));
    const contentDigests = contentDigestsOf(manifest);
    const base = {
      digest,
      mediaType: manifest.mediaType,
      artifactType: manifest.artifactType,
      annotations: manifest.annotations ?? {},
    };
    if (manifest.kind === 'index') {
      const children: SubjectTree[] = [];
      for (const child of manifest.manifests) children.push(await this.subjectTree(repository, child.digest, undefined, depth + 1));
      const listed = manifest.manifests.map((d) => platformOf(d.platform)).filter((p): p is Platform => p !== null);
      const facts: ManifestFacts = {
        ...base,
        totalSize: size + children.reduce((sum, c) => sum + c.facts.totalSize, 0),
        labels: {},
        platforms: listed.length > 0 ? listed : children.flatMap((c) => c.facts.platforms),
        children: children.map((c) => c.facts),
      };
      return { facts, nodes: [...children.flatMap((c) => c.nodes), { digest, contentDigests }] };
    }
    const config = await this.imageConfig(repository, manifest);
    const facts: ManifestFacts = {
      ...base,
      totalSize: size + (manifest.config?.size ?? 0) + manifest.layers.reduce((sum, l) => sum + l.size, 0),
      labels: config.labels,
      platforms: config.platform ? [config.platform] : [],
      children: [],
    };
    return { facts, nodes: [{ digest, contentDigests }] };
  }

  /** Labels and platform from an image config; artifacts and unreadable configs have neither. */
  private async imageConfig(repository: string, manifest: ParsedManifest): Promise<{ labels: Record<string, string>; platform: Platform | null }> {
    const none = { labels: {}, platform: null };
    const config = manifest.config;
    if (!config || !isImageConfig(config.mediaType) || config.size > MAX_CONFIG_BYTES) return none;
    let parsed: unknown;
    try {
      parsed = JSON.parse((await this.registry.readContent(repository, config.digest, MAX_CONFIG_BYTES)).toString('utf8'));
    } catch {
      return none;
    }
    if (typeof parsed !== 'object' || parsed === null) return none;
    const doc = parsed as { config?: { Labels?: unknown }; os?: unknown; architecture?: unknown; variant?: unknown };
    return { labels: stringRecord(doc.config?.Labels), platform: platformOf(doc) };
  }

  /** Evidence manifests for a subject in one repository, each read from our own records. */
  async evidenceFor(repository: string, subject: string): Promise<EvidenceItem[]> {
    const items = new Map<string, EvidenceItem>();
    const [alg, hex] = subject.split(':');
    const fallback = `${alg}-${hex}`;
    const found = await this.registry.metadata.subjectAndTagged(repository, subject, [...cosignTags(subject), fallback]);
    for (const { tag, record } of found) {
      if (tag === null) {
        items.set(record.digest, evidenceItem('referrer', record));
      } else if (tag === fallback) {
        if (record.mediaType !== MEDIA_TYPES.ociIndex) continue;
        for (const listed of await this.fallbackEntries(repository, record.digest, subject)) {
          if (!items.has(listed.digest)) items.set(listed.digest, listed);
        }
        items.set(record.digest, evidenceItem('fallback-index', record));
      } else {
        items.set(record.digest, evidenceItem(COSIGN_KINDS[tag.slice(tag.lastIndexOf('.') + 1)], record));
      }
    }
    // A stable order, so that the same evidence always gives the same results.
    return [...items.values()].sort((a, b) => (a.kind === b.kind ? (a.digest < b.digest ? -1 : 1) : a.kind < b.kind ? -1 : 1));
  }

  private async fallbackEntries(repository: string, indexDigest: string, subject: string): Promise<EvidenceItem[]> {
    let listed: string[];
    try {
      listed = (await this.parsed(repository, indexDigest)).manifest.manifests.map((m) => m.digest);
    } catch {
      return [];
    }
    const records = await this.registry.metadata.getManifests(repository, listed);
    return records
      .filter((r) => r.subjectDigest === null || r.subjectDigest === subject)
      .map((r) => evidenceItem('referrer', r));
  }

  /** The nodes a commit of evidence needs: each evidence manifest with its blobs, and evidence about it in turn. */
  async evidenceNodes(repository: string, subject: string, known?: EvidenceItem[], depth = 0): Promise<ManifestNode[]> {
    if (depth > 2) return [];
    const nodes: ManifestNode[] = [];
    const items = known ?? (await this.evidenceFor(repository, subject));
    if (items.length === 0) return [];
    // Manifests that are subjects in their own right (an admission of their own) are decided on their own.
    const decidedAlone = await this.registry.metadata.db.query<{ digest: string }>(
      `SELECT a.digest FROM admissions a JOIN repositories r ON r.id = a.repository_id WHERE r.name = $1 AND a.digest = ANY($2::text[])`,
      [repository, items.map((i) => i.digest)],
    );
    const alone = new Set(decidedAlone.map((r) => r.digest));
    for (const item of items.filter((i) => !alone.has(i.digest))) {
      const { manifest } = await this.parsed(repository, item.digest);
      nodes.push({ digest: item.digest, contentDigests: contentDigestsOf(manifest) });
      nodes.push(...(await this.evidenceNodes(repository, item.digest, undefined, depth + 1)));
    }
    return nodes;
  }
}

/** The image manifests of a subject: itself, or every image below an index. */
export function imageDigests(facts: ManifestFacts): string[] {
  if (facts.children.length === 0) return isIndexType(facts.mediaType) ? [] : [facts.digest];
  return [...new Set(facts.children.flatMap(imageDigests))];
}

function isIndexType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPES.ociIndex || mediaType === MEDIA_TYPES.dockerManifestList;
}

function evidenceItem(kind: EvidenceKind, record: { digest: string; mediaType: string; artifactType: string | null; annotations: Record<string, string> | null }): EvidenceItem {
  return { kind, digest: record.digest, mediaType: record.mediaType, artifactType: record.artifactType, annotations: record.annotations ?? {} };
}

function isImageConfig(mediaType: string): boolean {
  return mediaType === 'application/vnd.oci.image.config.v1+json' || mediaType === 'application/vnd.docker.container.image.v1+json';
}

function platformOf(value: unknown): Platform | null {
  if (typeof value !== 'object' || value === null) return null;
  const p = value as Record<string, unknown>;
  if (typeof p.os !== 'string' || typeof p.architecture !== 'string') return null;
  return typeof p.variant === 'string' && p.variant.length > 0
    ? { os: p.os, architecture: p.architecture, variant: p.variant }
    : { os: p.os, architecture: p.architecture };
}

function stringRecord(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string'));
}
