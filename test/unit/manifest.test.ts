import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { parseManifest } from '../../src/registry/manifest.js';
import { RegistryError } from '../../src/registry/errors.js';
import { MEDIA_TYPES } from '../../src/registry/mediatypes.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const image = (extra: Record<string, unknown> = {}) => ({
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.ociManifest,
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('a'), size: 10 },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('b'), size: 20 }],
  ...extra,
});
const buf = (v: unknown) => Buffer.from(JSON.stringify(v));

function expectInvalid(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(RegistryError);
    expect((err as RegistryError).code).to.equal('MANIFEST_INVALID');
    expect((err as RegistryError).message).to.match(pattern);
    return;
  }
  expect.fail('expected MANIFEST_INVALID');
}

describe('manifest parsing', () => {
  it('lists config and layers of an image manifest as references', () => {
    const parsed = parseManifest(buf(image()), MEDIA_TYPES.ociManifest);
    expect(parsed.kind).to.equal('image');
    expect(parsed.references).to.deep.equal([
      { digest: d('a'), kind: 'config' },
      { digest: d('b'), kind: 'layer' },
    ]);
    expect(parsed.artifactType).to.equal('application/vnd.oci.image.config.v1+json');
  });

  it('does not require layers that carry external urls (non-distributable)', () => {
    const manifest = image({
      layers: [{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: d('c'), size: 1, urls: ['https://example.test/l'] }],
    });
    const parsed = parseManifest(buf(manifest), undefined);
    expect(parsed.required.map((r) => r.digest)).to.deep.equal([d('a')]);
    expect(parsed.references.map((r) => r.digest)).to.include(d('c'));
  });

  it('prefers artifactType over the config media type and keeps the subject', () => {
    const parsed = parseManifest(
      buf(image({ artifactType: 'application/vnd.example', subject: { mediaType: MEDIA_TYPES.ociManifest, digest: d('e'), size: 3 } })),
      MEDIA_TYPES.ociManifest,
    );
    expect(parsed.artifactType).to.equal('application/vnd.example');
    expect(parsed.subject?.digest).to.equal(d('e'));
  });

  it('parses an index and a Docker manifest list', () => {
    const index = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [{ mediaType: MEDIA_TYPES.ociManifest, digest: d('f'), size: 5, platform: { os: 'linux', architecture: 'arm64' } }] };
    expect(parseManifest(buf(index), MEDIA_TYPES.ociIndex).references).to.deep.equal([{ digest: d('f'), kind: 'manifest' }]);
    const list = { ...index, mediaType: MEDIA_TYPES.dockerManifestList };
    expect(parseManifest(buf(list), MEDIA_TYPES.dockerManifestList).kind).to.equal('index');
  });

  it('parses the artifact manifests cosign and oras write', () => {
    for (const file of ['cosign-sig-manifest.json', 'cosign-bundle-manifest.json', 'oras-attach-manifest.json']) {
      const body = readFileSync(new URL(`../fixtures/cosign/${file}`, import.meta.url));
      const parsed = parseManifest(body, MEDIA_TYPES.ociManifest);
      expect(parsed.kind, file).to.equal('image');
    }
  });

  it('rejects a mediaType that contradicts Content-Type', () => {
    expectInvalid(() => parseManifest(buf(image()), MEDIA_TYPES.dockerManifest), /does not match Content-Type/);
  });

  it('rejects schema 1, unknown media types, bad JSON, bad descriptors', () => {
    expectInvalid(() => parseManifest(buf({ schemaVersion: 1, name: 'x' }), undefined), /schema 1/);
    expectInvalid(() => parseManifest(buf(image({ mediaType: 'text/plain' })), 'text/plain'), /unsupported manifest media type/);
    expectInvalid(() => parseManifest(Buffer.from('{nope'), MEDIA_TYPES.ociManifest), /not valid JSON/);
    expectInvalid(() => parseManifest(buf(image({ layers: [{ mediaType: 'x', digest: 'sha256:zz', size: 1 }] })), undefined), /layers\[0\]\.digest/);
    expectInvalid(() => parseManifest(buf(image({ layers: [{ mediaType: 'x', digest: d('1'), size: -1 }] })), undefined), /size/);
    expectInvalid(() => parseManifest(buf(image({ layers: [{ mediaType: 'x', digest: d('1'), size: 1e300 }] })), undefined), /size/);
    expectInvalid(() => parseManifest(buf(image({ annotations: { a: 'b\u0000' } })), undefined), /NUL character/);
    expectInvalid(() => parseManifest(buf(image({ annotations: { a: 1 } })), undefined), /annotations/);
    expectInvalid(() => parseManifest(buf([1, 2]), undefined), /JSON object/);
  });
});
