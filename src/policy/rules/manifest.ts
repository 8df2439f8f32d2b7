/**
 * The `manifest` rule: what the manifest itself must say. Required annotations (on the
 * subject) and labels (on every image config), allowed media types and platforms (subject
 * and every child), and a maximum total size. A manifest cannot change under its digest,
 * so every failure is final.
 */
import { shortDigest } from '../../registry/names.js';
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
      allowedPlatforms: { ...stringList, items: { type: 'string', pattern: '^[a-z0-9_-]+/[a-z0-9_-]+(/[a-z0-9_-]+)?$', description: 'os/architecture or os/architecture/variant, like linux/arm64/v8' } },
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
  return (rule.requireAnnotations ?? []).flatMap((key) => absence('annotation', key, subject.annotations, `on ${shortDigest(subject.digest)}`));
}

/** `missing` or `empty` (an empty value says nothing, so it does not count). */
function absence(what: string, key: string, values: Record<string, string>, where: string): string[] {
  if (!Object.hasOwn(values, key)) return [`${what} ${key} is missing ${where}`];
  if (values[key] === '') return [`${what} ${key} is empty ${where}`];
  return [];
}

function missingLabels(rule: ManifestRule, subject: ManifestFacts): string[] {
  const problems: string[] = [];
  for (const image of images(subject)) {
    for (const key of rule.requireLabels ?? []) problems.push(...absence('label', key, image.labels, `in the config of ${shortDigest(image.digest)}`));
  }
  return problems;
}

function mediaTypeProblems(rule: ManifestRule, subject: ManifestFacts): string[] {
  const allowed = rule.allowedMediaTypes;
  if (!allowed) return [];
  return everyManifest(subject)
    .filter((m) => !allowed.includes(m.mediaType))
    .map((m) => `media type ${m.mediaType} of ${shortDigest(m.digest)} is not allowed (allowed: ${allowed.join(', ')})`);
}

export function platformName(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/**
 * The variant a platform has when it names none, as containerd normalizes them: arm64 is
 * v8, arm is v7, and amd64's v1 is the baseline no one writes.
 */
const DEFAULT_VARIANT: Record<string, string> = { arm64: 'v8', arm: 'v7', amd64: 'v1' };

function normalVariant(architecture: string, variant: string | undefined): string | undefined {
  return variant || DEFAULT_VARIANT[architecture];
}

/** `linux/arm64` allows any variant of it; `linux/arm64/v8` only that variant (which an arm64 image without one has). */
function platformAllowed(p: Platform, allowed: string[]): boolean {
  return allowed.some((entry) => {
    const [os, architecture, variant] = entry.split('/');
    if (os !== p.os || architecture !== p.architecture) return false;
    return variant === undefined || variant === normalVariant(p.architecture, p.variant);
  });
}

function platformProblems(rule: ManifestRule, subject: ManifestFacts): string[] {
  const allowed = rule.allowedPlatforms;
  if (!allowed) return [];
  const problems: string[] = [];
  for (const image of images(subject)) {
    if (image.platforms.length === 0) problems.push(`${shortDigest(image.digest)} names no platform (os/architecture) in its config`);
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
