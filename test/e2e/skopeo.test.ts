/**
 * skopeo (containers/image) pushing to and pulling from the gateway: hand-built and
 * umoci-built OCI layouts, a multi-arch index, tag listing and deletion. Digests pulled
 * back must equal the digests pushed, and every blob must come back byte for byte.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startTestGateway, type DatabaseKind, type TestGateway } from '../helpers/gateway.js';
import { parseJsonOutput, requireClients, skopeo, skopeoExpectingFailure } from '../helpers/clients.js';
import {
  blobPath,
  buildImageLayout,
  buildMultiArchLayout,
  buildUmociImage,
  makeTempDir,
  OCI_INDEX,
  OCI_MANIFEST,
  readLayoutBlob,
  readLayoutIndex,
  removeTempDirs,
  resolveLayoutTag,
  sha256,
  verifyLayoutImage,
  type BuiltImage,
  type ImageIndex,
  type ImageManifest,
} from '../helpers/images.js';

/** The subset of `skopeo inspect` output the tests read. */
interface SkopeoInspect {
  Name: string;
  Digest: string;
  Architecture: string;
  Os: string;
  Layers: string[];
}

interface SkopeoTags {
  Repository: string;
  Tags: string[];
}

const push = (source: string, dest: string, ...flags: string[]) =>
  skopeo(['copy', '--quiet', '--dest-tls-verify=false', ...flags, source, dest]);
const pull = (source: string, dest: string, ...flags: string[]) =>
  skopeo(['copy', '--quiet', '--src-tls-verify=false', ...flags, source, dest]);
const inspectRaw = async (ref: string) => (await skopeo(['inspect', '--raw', '--tls-verify=false', ref])).stdout;
const inspect = async (ref: string, ...flags: string[]) =>
  parseJsonOutput<SkopeoInspect>(await skopeo([...flags, 'inspect', '--tls-verify=false', ref]), `skopeo inspect ${ref}`);
const listTags = async (ref: string) =>
  parseJsonOutput<SkopeoTags>(await skopeo(['list-tags', '--tls-verify=false', ref]), `skopeo list-tags ${ref}`);

/**
 * Pushes a layout image, reads it back three ways (raw manifest, inspect, copy into a new
 * layout) and checks digests and bytes against what the layout held.
 */
async function roundTrip(gateway: TestGateway, image: BuiltImage, repository: string): Promise<void> {
  const remote = `docker://${gateway.host}/${repository}:${image.tag}`;
  const pushed = resolveLayoutTag(image.layout, image.tag);
  expect(pushed.digest, 'layout index.json digest').to.equal(image.manifestDigest);
  const pushedBytes = readLayoutBlob(image.layout, pushed.digest);

  await push(image.reference, remote);

  // The raw manifest is the exact bytes of the layout's manifest blob.
  const raw = await inspectRaw(remote);
  expect(sha256(raw), 'digest of `skopeo inspect --raw`').to.equal(pushed.digest);
  expect(raw).to.equal(pushedBytes.toString('utf8'));
  const manifest = JSON.parse(raw) as ImageManifest;
  // umoci omits the (optional) mediaType field; the registry must still serve it as an OCI manifest.
  expect(manifest.mediaType ?? OCI_MANIFEST).to.equal(OCI_MANIFEST);
  expect(manifest.layers.map((l) => l.digest)).to.deep.equal(image.layerDigests);

  const inspected = await inspect(remote);
  expect(inspected.Digest, 'skopeo inspect Digest').to.equal(pushed.digest);
  expect(inspected.Layers).to.deep.equal(image.layerDigests);
  expect(inspected.Architecture).to.equal(image.platform.architecture);
  expect(inspected.Os).to.equal(image.platform.os);

  // By digest, too.
  const byDigest = await inspect(`docker://${gateway.host}/${repository}@${pushed.digest}`);
  expect(byDigest.Digest).to.equal(pushed.digest);

  // The registry's own view: the manifest GET answers with the same digest and media type.
  const response = await fetch(`${gateway.url}/v2/${repository}/manifests/${image.tag}`, { headers: { Accept: OCI_MANIFEST } });
  expect(response.status).to.equal(200);
  expect(response.headers.get('docker-content-digest')).to.equal(pushed.digest);
  expect(response.headers.get('content-type')).to.equal(OCI_MANIFEST);
  expect(sha256(Buffer.from(await response.arrayBuffer()))).to.equal(pushed.digest);

  // Pull into a fresh layout: same manifest digest, same blobs, byte for byte.
  const target = path.join(makeTempDir('pulled-'), 'layout');
  await pull(remote, `oci:${target}:${image.tag}`, '--preserve-digests');
  const pulled = resolveLayoutTag(target, image.tag);
  expect(pulled.digest, 'digest of the pulled manifest').to.equal(pushed.digest);
  expect(pulled.mediaType).to.equal(OCI_MANIFEST);
  verifyLayoutImage(target, pulled.digest);
  for (const digest of [pushed.digest, image.configDigest, ...image.layerDigests]) {
    const original = readFileSync(blobPath(image.layout, digest));
    const copy = readFileSync(blobPath(target, digest));
    expect(sha256(copy), `blob ${digest}`).to.equal(sha256(original));
    expect(copy.equals(original), `blob ${digest} bytes`).to.equal(true);
  }
}

function describeSkopeoAgainst(kind: DatabaseKind, full: boolean): void {
  describe(`e2e: skopeo against the gateway (${kind})`, function () {
    this.timeout(120_000);
    let gateway: TestGateway;

    before(async function () {
      this.timeout(90_000);
      requireClients('skopeo', 'umoci');
      gateway = await startTestGateway(kind);
    });

    after(async () => {
      await gateway?.stop();
      removeTempDirs();
    });

    it('pushes a hand-built OCI layout and pulls back the same manifest digest and identical layers', async () => {
      const image = buildImageLayout({ tag: `hand-${kind}` });
      await roundTrip(gateway, image, 'e2e/app');
    });

    if (!full) return;

    it('round-trips an image built with umoci (init, new, unpack --rootless, repack, config)', async () => {
      const image = await buildUmociImage({ tag: 'umoci' });
      expect(image.layerDigests, 'umoci repack wrote one layer').to.have.length(1);
      // umoci's config edit is in the config blob we push.
      const config = JSON.parse(readLayoutBlob(image.layout, image.configDigest).toString('utf8')) as { config?: { Cmd?: string[] } };
      expect(config.config?.Cmd).to.deep.equal(['/hello.txt']);
      await roundTrip(gateway, image, 'e2e/umoci');
    });

    describe('a multi-arch index (linux/amd64 + linux/arm64)', () => {
      let built: ReturnType<typeof buildMultiArchLayout>;
      let remote: string;

      before(async () => {
        built = buildMultiArchLayout({ tag: 'multi' });
        remote = `docker://${gateway.host}/e2e/multi:${built.tag}`;
        await push(built.reference, remote, '--all');
      });

      it('keeps the index digest and both child manifest digests when pushed with --all', async () => {
        const raw = await inspectRaw(remote);
        expect(sha256(raw), 'index digest').to.equal(built.indexDigest);
        const index = JSON.parse(raw) as ImageIndex;
        expect(index.mediaType).to.equal(OCI_INDEX);
        expect(index.manifests.map((m) => m.digest)).to.deep.equal(built.children.map((c) => c.manifestDigest));
        expect(index.manifests.map((m) => m.platform?.architecture)).to.deep.equal(['amd64', 'arm64']);
        for (const child of built.children) {
          const childRaw = await inspectRaw(`docker://${gateway.host}/e2e/multi@${child.manifestDigest}`);
          expect(sha256(childRaw), `child ${child.platform.architecture}`).to.equal(child.manifestDigest);
        }
        const head = await fetch(`${gateway.url}/v2/e2e/multi/manifests/${built.tag}`, { method: 'HEAD', headers: { Accept: OCI_INDEX } });
        expect(head.status).to.equal(200);
        expect(head.headers.get('content-type')).to.equal(OCI_INDEX);
        expect(head.headers.get('docker-content-digest')).to.equal(built.indexDigest);
      });

      it('pulls the whole index back with --all: same index, same children, identical blobs', async () => {
        const target = path.join(makeTempDir('pulled-multi-'), 'layout');
        await pull(remote, `oci:${target}:${built.tag}`, '--all', '--preserve-digests');
        const top = resolveLayoutTag(target, built.tag);
        expect(top.digest).to.equal(built.indexDigest);
        expect(top.mediaType).to.equal(OCI_INDEX);
        const index = JSON.parse(readLayoutBlob(target, top.digest).toString('utf8')) as ImageIndex;
        expect(index.manifests.map((m) => m.digest)).to.deep.equal(built.children.map((c) => c.manifestDigest));
        for (const child of built.children) {
          verifyLayoutImage(target, child.manifestDigest);
          for (const digest of [child.configDigest, ...child.layerDigests]) {
            expect(readFileSync(blobPath(target, digest)).equals(readFileSync(blobPath(built.layout, digest))), digest).to.equal(true);
          }
        }
      });

      it('with --override-arch arm64, inspects and pulls the arm64 child only', async () => {
        const [amd64, arm64] = built.children;
        const inspected = await inspect(remote, '--override-arch', 'arm64');
        expect(inspected.Architecture).to.equal('arm64');
        expect(inspected.Layers).to.deep.equal(arm64.layerDigests);

        const target = path.join(makeTempDir('pulled-arm64-'), 'layout');
        await skopeo(['--override-arch', 'arm64', 'copy', '--quiet', '--src-tls-verify=false', remote, `oci:${target}:arm`]);
        const pulled = resolveLayoutTag(target, 'arm');
        expect(pulled.digest, 'the arm64 child').to.equal(arm64.manifestDigest);
        expect(pulled.digest).to.not.equal(amd64.manifestDigest);
        verifyLayoutImage(target, pulled.digest);
        const pulledLayers = (JSON.parse(readLayoutBlob(target, pulled.digest).toString('utf8')) as ImageManifest).layers.map((l) => l.digest);
        expect(pulledLayers).to.deep.equal(arm64.layerDigests);
        const files = readLayoutIndex(target).manifests;
        expect(files).to.have.length(1);
        for (const digest of amd64.layerDigests) expect(() => readLayoutBlob(target, digest), `amd64 layer ${digest}`).to.throw();
      });
    });

    describe('tags and deletion', () => {
      let v1: BuiltImage;
      let v2: BuiltImage;
      const repository = 'e2e/tags';

      before(async () => {
        v1 = buildImageLayout({ tag: 'v1' });
        v2 = buildImageLayout({ tag: 'v2' });
        expect(v1.manifestDigest).to.not.equal(v2.manifestDigest);
        await push(v1.reference, `docker://${gateway.host}/${repository}:v1`);
        await push(v2.reference, `docker://${gateway.host}/${repository}:v2`);
      });

      it('lists both pushed tags with skopeo list-tags', async () => {
        const listed = await listTags(`docker://${gateway.host}/${repository}`);
        expect(listed.Repository).to.equal(`${gateway.host}/${repository}`);
        expect([...listed.Tags].sort()).to.deep.equal(['v1', 'v2']);
      });

      it('deletes a tag with skopeo delete: it no longer resolves, the other tag still does', async () => {
        await skopeo(['delete', '--tls-verify=false', `docker://${gateway.host}/${repository}:v1`]);
        const failure = await skopeoExpectingFailure(['inspect', '--raw', '--tls-verify=false', `docker://${gateway.host}/${repository}:v1`]);
        expect(failure.stderr).to.match(/manifest unknown/i);
        // skopeo deletes by digest: the manifest itself is gone too.
        await skopeoExpectingFailure(['inspect', '--raw', '--tls-verify=false', `docker://${gateway.host}/${repository}@${v1.manifestDigest}`]);
        expect((await inspect(`docker://${gateway.host}/${repository}:v2`)).Digest).to.equal(v2.manifestDigest);
        expect((await listTags(`docker://${gateway.host}/${repository}`)).Tags).to.deep.equal(['v2']);
      });

      it('deletes by digest with skopeo delete: inspect by digest and by its tag fail', async () => {
        const byDigest = `docker://${gateway.host}/${repository}@${v2.manifestDigest}`;
        await skopeo(['delete', '--tls-verify=false', byDigest]);
        const failure = await skopeoExpectingFailure(['inspect', '--tls-verify=false', byDigest]);
        expect(failure.stderr).to.match(/manifest unknown/i);
        await skopeoExpectingFailure(['inspect', '--raw', '--tls-verify=false', `docker://${gateway.host}/${repository}:v2`]);
        expect((await listTags(`docker://${gateway.host}/${repository}`)).Tags).to.deep.equal([]);
        const response = await fetch(`${gateway.url}/v2/${repository}/manifests/${v2.manifestDigest}`, { headers: { Accept: OCI_MANIFEST } });
        expect(response.status).to.equal(404);
        const body = (await response.json()) as { errors: Array<{ code: string }> };
        expect(body.errors[0].code).to.equal('MANIFEST_UNKNOWN');
      });
    });
  });
}

describeSkopeoAgainst('pglite', true);
describeSkopeoAgainst('postgres', false);
