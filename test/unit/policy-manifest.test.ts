/** The `manifest` rule type on evidence fixtures: each option, indexes and their children, platforms. */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { evaluate } from '../../src/policy/evaluate.js';
import { contentHash } from '../../src/policy/loader.js';
import { humanBytes } from '../../src/policy/rules/manifest.js';
import type { Evidence, LoadedPolicy, ManifestFacts, RuleResult } from '../../src/policy/types.js';

function fixtureEvidence(name: string): Evidence {
  const doc = JSON.parse(readFileSync(new URL(`../fixtures/policies/evidence/${name}`, import.meta.url), 'utf8')) as Evidence;
  const complete = (f: Partial<ManifestFacts> & { digest: string; mediaType: string }): ManifestFacts => ({
    artifactType: null, totalSize: 0, annotations: {}, labels: {}, platforms: [], ...f, children: (f.children ?? []).map(complete),
  });
  return { repository: doc.repository, subject: complete(doc.subject), items: doc.items ?? [], extra: doc.extra ?? {} };
}

/** One manifest rule with these options, enforced. */
function check(options: Record<string, unknown>, evidence: Evidence): RuleResult {
  const policy = { name: 'p', repositories: ['**'], mode: 'enforce' as const, rules: [{ id: 'm', type: 'manifest', ...options }] };
  const loaded: LoadedPolicy = { policy, hash: contentHash(JSON.stringify(policy)) };
  return evaluate(loaded, evidence, new Date('2026-01-01T00:00:00Z')).results[0];
}

const labelled = fixtureEvidence('image-labelled.json');
const bare = fixtureEvidence('image-bare.json');
const index = fixtureEvidence('index-multiarch.json');
const unknownPlatform = fixtureEvidence('index-unknown-platform.json');
const short = (facts: ManifestFacts) => facts.digest.slice(0, 'sha256:'.length + 12);

describe('manifest rule', () => {
  describe('requireAnnotations', () => {
    it('passes when the subject carries every annotation', () => {
      expect(check({ requireAnnotations: ['org.opencontainers.image.source', 'org.opencontainers.image.revision'] }, labelled)).to.include({ status: 'passed' });
    });

    it('names each missing annotation and the digest it is missing on', () => {
      const result = check({ requireAnnotations: ['org.opencontainers.image.source', 'org.opencontainers.image.revision'] }, bare);
      expect(result.status).to.equal('failed');
      expect(result.message).to.equal(
        `annotation org.opencontainers.image.source is missing on ${short(bare.subject)}; annotation org.opencontainers.image.revision is missing on ${short(bare.subject)}`,
      );
    });

    it('does not count an empty annotation, and says it is empty', () => {
      const empty = { ...labelled, subject: { ...labelled.subject, annotations: { 'org.opencontainers.image.source': '' } } };
      expect(check({ requireAnnotations: ['org.opencontainers.image.source'] }, empty).message).to.equal(
        `annotation org.opencontainers.image.source is empty on ${short(labelled.subject)}`,
      );
    });

    it('reads the annotations of an index itself, not of its children', () => {
      expect(check({ requireAnnotations: ['org.opencontainers.image.source'] }, index)).to.include({ status: 'passed' });
    });

    it('is not fooled by inherited object properties', () => {
      expect(check({ requireAnnotations: ['constructor'] }, labelled)).to.include({ status: 'failed' });
    });
  });

  describe('requireLabels', () => {
    it('reads the image config labels', () => {
      expect(check({ requireLabels: ['maintainer'] }, labelled)).to.include({ status: 'passed' });
      expect(check({ requireLabels: ['maintainer'] }, bare).message).to.equal(`label maintainer is missing in the config of ${short(bare.subject)}`);
    });

    it('asks every child image of an index, and names the one without', () => {
      const armv7 = index.subject.children[2];
      expect(check({ requireLabels: ['maintainer'] }, index)).to.deep.include({
        status: 'failed',
        message: `label maintainer is missing in the config of ${short(armv7)}`,
      });
    });
  });

  describe('allowedMediaTypes', () => {
    it('checks the subject', () => {
      const result = check({ allowedMediaTypes: ['application/vnd.oci.image.manifest.v1+json'] }, bare);
      expect(result.message).to.equal(
        `media type application/vnd.docker.distribution.manifest.v2+json of ${short(bare.subject)} is not allowed (allowed: application/vnd.oci.image.manifest.v1+json)`,
      );
    });

    it('checks an index and every child', () => {
      expect(check({ allowedMediaTypes: ['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'] }, index)).to.include({ status: 'passed' });
      const onlyIndex = check({ allowedMediaTypes: ['application/vnd.oci.image.index.v1+json'] }, index);
      expect(onlyIndex.status).to.equal('failed');
      expect((onlyIndex.details as { problems: string[] }).problems).to.have.length(3);
    });
  });

  describe('allowedPlatforms', () => {
    it('names the platform that is not allowed and the allowed ones', () => {
      expect(check({ allowedPlatforms: ['linux/amd64', 'linux/arm64'] }, bare).message).to.equal(
        'platform linux/s390x is not allowed (allowed: linux/amd64, linux/arm64)',
      );
    });

    it('checks every child of an index', () => {
      expect(check({ allowedPlatforms: ['linux/amd64', 'linux/arm64', 'linux/arm/v7'] }, index)).to.include({ status: 'passed' });
      expect(check({ allowedPlatforms: ['linux/amd64', 'linux/arm64'] }, index).message).to.equal(
        'platform linux/arm/v7 is not allowed (allowed: linux/amd64, linux/arm64)',
      );
    });

    it('lets os/arch allow any variant, and os/arch/variant only that one, with arm64 meaning arm64/v8', () => {
      expect(check({ allowedPlatforms: ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7'] }, index)).to.include({ status: 'passed' });
      expect(check({ allowedPlatforms: ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v6'] }, index).message).to.equal(
        'platform linux/arm/v7 is not allowed (allowed: linux/amd64, linux/arm64/v8, linux/arm/v6)',
      );
      const armNoVariant = { ...bare, subject: { ...bare.subject, platforms: [{ os: 'linux', architecture: 'arm' }] } };
      expect(check({ allowedPlatforms: ['linux/arm/v7'] }, armNoVariant)).to.include({ status: 'passed' });
      expect(check({ allowedPlatforms: ['linux/amd64/v2'] }, labelled).message).to.equal('platform linux/amd64 is not allowed (allowed: linux/amd64/v2)');
    });

    it('fails an image that names no platform, saying so', () => {
      const unknown = unknownPlatform.subject.children[1];
      expect(check({ allowedPlatforms: ['linux/amd64'] }, unknownPlatform)).to.deep.include({
        status: 'failed',
        message: `${short(unknown)} names no platform (os/architecture) in its config`,
      });
    });
  });

  describe('maxSizeBytes', () => {
    it('compares the subject\'s total size, and says both sizes in binary units', () => {
      expect(check({ maxSizeBytes: 2147483648 }, labelled)).to.include({ status: 'passed' });
      expect(check({ maxSizeBytes: 2147483648 }, bare).message).to.equal('image is 3.2 GiB, above the 2 GiB limit');
      expect(check({ maxSizeBytes: index.subject.totalSize - 1 }, index).status).to.equal('failed');
    });

    it('writes sizes a person reads', () => {
      expect([humanBytes(512), humanBytes(1536), humanBytes(10 * 1024 ** 3)]).to.deep.equal(['512 B', '1.5 KiB', '10 GiB']);
    });
  });

  it('reports every failed option in one result, each failure final (failed, never missing)', () => {
    const result = check({ requireAnnotations: ['org.opencontainers.image.source'], allowedPlatforms: ['linux/amd64'], maxSizeBytes: 1024 ** 3 }, bare);
    expect(result.status).to.equal('failed');
    expect((result.details as { problems: string[] }).problems).to.deep.equal([
      `annotation org.opencontainers.image.source is missing on ${short(bare.subject)}`,
      'platform linux/s390x is not allowed (allowed: linux/amd64)',
      'image is 3.2 GiB, above the 1 GiB limit',
    ]);
  });
});
