/**
 * The `manifest` rule: what the manifest itself must say. Required annotations (on the
 * subject) and labels (on every image config), allowed media types and platforms (subject
 * and every child), and a maximum total size. A manifest cannot change under its digest,
 * so every failure is final.
 */
import type { ManifestFacts, Platform, RuleBase, RuleType } from '../types.js';

export interface ManifestRule extends RuleBase {
  type: 'manifest';
  requireAnnotations?: string[];
  requireLabels?: string[];
  allowedMediaTypes?: string[];
  allowedPlatforms?: string[];
  maxSizeBytes?: number;
}

const stringList = { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 256 } };

export const manifestRule: RuleType<ManifestRule> = {
  type: 'manifest',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'type'],
    anyOf: ['requireAnnotations', 'requireLabels', 'allowedMediaTypes', 'allowedPlatforms', 'maxSizeBytes'].map((k) => ({ required: [k] })),
    properties: {
      id: true,
      type: true,
      mode: true,
      description: true,
      requireAnnotations: stringList,
      requireLabels: stringList,
      allowedMediaTypes: stringList,
      allowedPlatforms: { ...stringList, items: { type: 'string', pattern: '^[a-z0-9_-]+/[a-z0-9_-]+(/[a-z0-9_-]+)?$' } },
      maxSizeBytes: { type: 'integer', minimum: 1 },
    },
  },
  evaluate(rule, evidence) {
    const subject = evidence.subject;
    const problems = [
      ...missingAnnotations(rule, subject),
      ...missingLabels(rule, subject),
      ...mediaTypeProblems(rule, subject),
      ...platformProblems(rule, subject),
      ...sizeProblems(rule, subject),
    ];
    if (problems.length === 0) return { status: 'passed', message: 'the manifest meets every requirement' };
    return { status: 'failed', message: problems.join('; '), details: { problems } };
  },
};

function short(digest: string): string {
  return digest.slice(0, digest.indexOf(':') + 13);
}

/** The subject and, for an index, every manifest below it. */
function everyManifest(facts: ManifestFacts): ManifestFacts[] {
  return [facts, ...facts.children.flatMap(everyManifest)];
}

function images(facts: ManifestFacts): ManifestFacts[] {
  return everyManifest(facts).filter((m) => m.children.length === 0 && !isIndexType(m.mediaType));
}

function isIndexType(mediaType: string): boolean {
  return mediaType.endsWith('image.index.v1+json') || mediaType.endsWith('manifest.list.v2+json');
}

function missingAnnotations(rule: ManifestRule, subject: ManifestFacts): string[] {
  return (rule.requireAnnotations ?? [])
    .filter((key) => !(key in subject.annotations) || subject.annotations[key] === '')
    .map((key) => `annotation ${key} is missing on ${short(subject.digest)}`);
}

function missingLabels(rule: ManifestRule, subject: ManifestFacts): string[] {
  const problems: string[] = [];
  for (const image of images(subject)) {
    for (const key of rule.requireLabels ?? []) {
      if (!(key in image.labels) || image.labels[key] === '') problems.push(`label ${key} is missing in the config of ${short(image.digest)}`);
    }
  }
  return problems;
}

function mediaTypeProblems(rule: ManifestRule, subject: ManifestFacts): string[] {
  const allowed = rule.allowedMediaTypes;
  if (!allowed) return [];
  return everyManifest(subject)
    .filter((m) => !allowed.includes(m.mediaType))
    .map((m) => `media type ${m.mediaType} of ${short(m.digest)} is not allowed (allowed: ${allowed.join(', ')})`);
}

export function platformName(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

function platformAllowed(p: Platform, allowed: string[]): boolean {
  const full = platformName(p);
  // `linux/arm64` allows any variant of it; `linux/arm64/v8` only that variant.
  return allowed.some((a) => a === full || a === `${p.os}/${p.architecture}`);
}

function platformProblems(rule: ManifestRule, subject: ManifestFacts): string[] {
  const allowed = rule.allowedPlatforms;
  if (!allowed) return [];
  const problems: string[] = [];
  for (const image of images(subject)) {
    if (image.platforms.length === 0) problems.push(`${short(image.digest)} names no platform (os/architecture) in its config`);
  }
  const platforms = subject.children.length > 0 ? images(subject).flatMap((i) => i.platforms) : subject.platforms;
  for (const p of [...new Map([...platforms, ...subject.platforms].map((x) => [platformName(x), x])).values()]) {
    if (!platformAllowed(p, allowed)) problems.push(`platform ${platformName(p)} is not allowed (allowed: ${allowed.join(', ')})`);
  }
  return problems;
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

function sizeProblems(rule: ManifestRule, subject: ManifestFacts): string[] {
  if (rule.maxSizeBytes === undefined || subject.totalSize <= rule.maxSizeBytes) return [];
  return [`image is ${humanBytes(subject.totalSize)}, above the ${humanBytes(rule.maxSizeBytes)} limit`];
}
