/**
 * oras 1.2 against the gateway: artifacts (push, pull, manifest/blob fetch), referrers
 * (attach, discover, artifact-type filters) and the referrers API as oras relies on it:
 * OCI-Subject on the manifest PUT, so no fallback tag, and an OCI index from
 * GET /v2/<name>/referrers/<digest>.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { SOCKET_INGEST_MIN_BYTES } from '../../src/storage/socket-ingest.js';
import { oras, orasExpectingFailure, parseJsonOutput, requireClients } from '../helpers/clients.js';
import { makeTempDir, OCI_INDEX, OCI_MANIFEST, removeTempDirs, sha256, type Descriptor, type ImageManifest } from '../helpers/images.js';

const ARTIFACT_TYPE = 'application/vnd.example+type';
const SBOM_TYPE = 'application/vnd.example.sbom';
const SIGNATURE_TYPE = 'application/vnd.example.signature';
const FETCH_TYPE = 'application/vnd.example.pushed-with-fetch';
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 };

interface Discovered {
  manifests: Array<Descriptor & { reference: string }>;
}

interface ReferrersIndex {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
}

describe('e2e: oras against the gateway (pglite)', function () {
  this.timeout(120_000);
  let gateway: TestGateway;
  let work: string;
  let repo: string;
  const fileText = `hello from oras ${Date.now()}\n`;
  const sbomText = `${JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'e2e', packages: [{ name: 'left-pad', versionInfo: '1.3.0' }] })}\n`;

  /** What `oras push` wrote, read from --export-manifest: the exact bytes it PUT. */
  let pushedManifestBytes: Buffer;
  let artifactDigest: string;
  let sbomDigest: string;
  let signatureDigest: string;

  const discover = async (reference: string, ...flags: string[]) =>
    parseJsonOutput<Discovered>(await oras(['discover', '--plain-http', '-o', 'json', ...flags, reference]), `oras discover ${reference}`);

  before(async function () {
    this.timeout(60_000);
    requireClients('oras');
    gateway = await startTestGateway('pglite');
    work = makeTempDir('oras-');
    repo = `${gateway.host}/e2e/art`;
    writeFileSync(path.join(work, 'file.txt'), fileText);
    writeFileSync(path.join(work, 'sbom.json'), sbomText);
    writeFileSync(path.join(work, 'signature.bin'), Buffer.from('not really a signature\n'));
  });

  after(async () => {
    await gateway?.stop();
    removeTempDirs();
  });

  it('pushes an artifact with oras push and pulls back identical file contents', async () => {
    const result = await oras(
      ['push', '--plain-http', `${repo}:v1`, 'file.txt:text/plain', '--artifact-type', ARTIFACT_TYPE, '--export-manifest', 'pushed.json', '--format', 'json'],
      { cwd: work },
    );
    pushedManifestBytes = readFileSync(path.join(work, 'pushed.json'));
    artifactDigest = sha256(pushedManifestBytes);
    const pushed = parseJsonOutput<Descriptor>(result, 'oras push');
    expect(pushed.digest, 'digest oras reports').to.equal(artifactDigest);
    expect(pushed.artifactType).to.equal(ARTIFACT_TYPE);

    const manifest = JSON.parse(pushedManifestBytes.toString('utf8')) as ImageManifest;
    expect(manifest.artifactType).to.equal(ARTIFACT_TYPE);
    expect(manifest.layers).to.have.length(1);
    expect(manifest.layers[0].mediaType).to.equal('text/plain');
    expect(manifest.layers[0].digest).to.equal(sha256(fileText));

    const out = path.join(work, 'pulled');
    await oras(['pull', '--plain-http', `${repo}:v1`, '-o', out]);
    expect(readFileSync(path.join(out, 'file.txt'), 'utf8')).to.equal(fileText);
  });

  it('pushes files of 8 MiB and more with oras push, their bodies read from the socket, and pulls them back identical', async () => {
    const big = [randomBytes(SOCKET_INGEST_MIN_BYTES + 1), randomBytes(SOCKET_INGEST_MIN_BYTES + 3 * 1024 * 1024)];
    big.forEach((data, i) => writeFileSync(path.join(work, `big${i}.bin`), data));
    const ingested = async () => {
      const text = await (await fetch(`${gateway.url}/metrics`)).text();
      return Number(/^gateway_storage_operations_total\{[^}]*op="ingestUpload"[^}]*result="ok"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const before = await ingested();
    // A repository of its own: later tests list this suite's tags.
    const bigRepo = `${gateway.host}/e2e/big`;
    await oras(['push', '--plain-http', `${bigRepo}:v1`, 'big0.bin', 'big1.bin'], { cwd: work });
    // oras pushes each blob as POST then PUT with its length: both were read from their sockets.
    expect((await ingested()) - before).to.equal(2);
    const out = path.join(work, 'pulled-big');
    await oras(['pull', '--plain-http', `${bigRepo}:v1`, '-o', out]);
    big.forEach((data, i) => expect(readFileSync(path.join(out, `big${i}.bin`)).equals(data), `big${i}.bin`).to.equal(true));
  });

  it('fetches the pushed manifest and blob byte-identical with oras manifest fetch / blob fetch', async () => {
    const manifestOut = path.join(work, 'fetched-manifest.json');
    await oras(['manifest', 'fetch', '--plain-http', '--output', manifestOut, `${repo}:v1`]);
    expect(readFileSync(manifestOut).equals(pushedManifestBytes), 'manifest bytes by tag').to.equal(true);

    const byDigest = await oras(['manifest', 'fetch', '--plain-http', `${repo}@${artifactDigest}`]);
    expect(sha256(byDigest.stdout), 'manifest by digest, on stdout').to.equal(artifactDigest);

    const descriptor = parseJsonOutput<Descriptor>(
      await oras(['manifest', 'fetch', '--plain-http', '--descriptor', `${repo}:v1`]),
      'oras manifest fetch --descriptor',
    );
    expect(descriptor.digest).to.equal(artifactDigest);
    expect(descriptor.size).to.equal(pushedManifestBytes.length);
    expect(descriptor.mediaType).to.equal(OCI_MANIFEST);

    const manifest = JSON.parse(pushedManifestBytes.toString('utf8')) as ImageManifest;
    for (const blob of [manifest.layers[0], manifest.config]) {
      const blobOut = path.join(work, `blob-${blob.digest.slice(7, 19)}`);
      await oras(['blob', 'fetch', '--plain-http', '--output', blobOut, `${repo}@${blob.digest}`]);
      const bytes = readFileSync(blobOut);
      expect(sha256(bytes), `blob ${blob.digest}`).to.equal(blob.digest);
      expect(bytes.length).to.equal(blob.size);
    }
    expect(readFileSync(path.join(work, `blob-${manifest.layers[0].digest.slice(7, 19)}`), 'utf8')).to.equal(fileText);
  });

  it('fails oras manifest fetch / blob fetch of content that was never pushed', async () => {
    const missing = sha256('never pushed');
    const manifestFailure = await orasExpectingFailure(['manifest', 'fetch', '--plain-http', `${repo}@${missing}`]);
    expect(manifestFailure.stderr).to.match(/not found|MANIFEST_UNKNOWN/i);
    const blobFailure = await orasExpectingFailure(['blob', 'fetch', '--plain-http', '--output', '-', `${repo}@${missing}`]);
    expect(blobFailure.stderr).to.match(/not found|BLOB_UNKNOWN/i);
  });

  it('attaches an SBOM with oras attach; the gateway answers OCI-Subject, so oras writes no fallback tag', async () => {
    const result = await oras(
      [
        'attach', '--plain-http', '--debug', '--artifact-type', SBOM_TYPE, `${repo}@${artifactDigest}`, 'sbom.json:application/json',
        '--export-manifest', 'sbom-manifest.json', '--format', 'json',
      ],
      { cwd: work },
    );
    const exported = readFileSync(path.join(work, 'sbom-manifest.json'));
    sbomDigest = sha256(exported);
    const attached = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as Descriptor;
    expect(attached.digest).to.equal(sbomDigest);
    const manifest = JSON.parse(exported.toString('utf8')) as ImageManifest;
    expect(manifest.subject?.digest).to.equal(artifactDigest);
    expect(manifest.artifactType).to.equal(SBOM_TYPE);

    // oras logs response headers with --debug: the manifest PUT was answered with OCI-Subject.
    expect(result.stderr).to.match(new RegExp(`"Oci-Subject":\\s*"${artifactDigest}"`, 'i'));
    // Had the header been missing, oras would have fallen back to the sha256-<hex> tag scheme.
    const tags = (await (await fetch(`${gateway.url}/v2/e2e/art/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).to.deep.equal(['v1']);
  });

  it('lists the attached manifest with oras discover -o json, with its digest and artifactType', async () => {
    const found = await discover(`${repo}@${artifactDigest}`);
    expect(found.manifests).to.have.length(1);
    expect(found.manifests[0].digest).to.equal(sbomDigest);
    expect(found.manifests[0].artifactType).to.equal(SBOM_TYPE);
    expect(found.manifests[0].mediaType).to.equal(OCI_MANIFEST);
    // Through the referrers API only, not the tag scheme.
    const viaApi = await discover(`${repo}@${artifactDigest}`, '--distribution-spec', 'v1.1-referrers-api');
    expect(viaApi.manifests.map((m) => m.digest)).to.deep.equal([sbomDigest]);
    // By tag as well: oras resolves v1 to the subject digest first.
    expect((await discover(`${repo}:v1`)).manifests.map((m) => m.digest)).to.deep.equal([sbomDigest]);
  });

  it('filters oras discover by --artifact-type', async () => {
    const result = await oras(
      ['attach', '--plain-http', '--artifact-type', SIGNATURE_TYPE, `${repo}@${artifactDigest}`, 'signature.bin', '--format', 'json'],
      { cwd: work },
    );
    signatureDigest = (JSON.parse(result.stdout) as Descriptor).digest;
    expect(signatureDigest).to.match(/^sha256:[a-f0-9]{64}$/);

    const all = await discover(`${repo}@${artifactDigest}`);
    expect(all.manifests.map((m) => m.digest).sort()).to.deep.equal([sbomDigest, signatureDigest].sort());

    const sboms = await discover(`${repo}@${artifactDigest}`, '--artifact-type', SBOM_TYPE);
    expect(sboms.manifests.map((m) => m.digest)).to.deep.equal([sbomDigest]);
    const signatures = await discover(`${repo}@${artifactDigest}`, '--artifact-type', SIGNATURE_TYPE);
    expect(signatures.manifests.map((m) => m.digest)).to.deep.equal([signatureDigest]);
    const none = await discover(`${repo}@${artifactDigest}`, '--artifact-type', 'application/vnd.example.nothing');
    expect(none.manifests ?? []).to.deep.equal([]);
  });

  it('shows referrers of referrers in oras discover -o tree', async () => {
    writeFileSync(path.join(work, 'sbom-signature.bin'), Buffer.from('signature over the sbom\n'));
    const result = await oras(
      ['attach', '--plain-http', '--artifact-type', SIGNATURE_TYPE, `${repo}@${sbomDigest}`, 'sbom-signature.bin', '--format', 'json'],
      { cwd: work },
    );
    const nested = (JSON.parse(result.stdout) as Descriptor).digest;
    const tree = (await oras(['discover', '--plain-http', '-o', 'tree', `${repo}@${artifactDigest}`])).stdout;
    for (const digest of [sbomDigest, signatureDigest, nested]) expect(tree).to.include(digest);
    // The nested signature is listed under the SBOM, not under the artifact.
    const direct = await discover(`${repo}@${artifactDigest}`);
    expect(direct.manifests.map((m) => m.digest)).to.not.include(nested);
    expect((await discover(`${repo}@${sbomDigest}`)).manifests.map((m) => m.digest)).to.deep.equal([nested]);
  });

  it('serves GET /v2/<name>/referrers/<digest> as an OCI index, filtered by artifactType on request', async () => {
    const response = await fetch(`${gateway.url}/v2/e2e/art/referrers/${artifactDigest}`);
    expect(response.status).to.equal(200);
    expect(response.headers.get('content-type')).to.equal(OCI_INDEX);
    expect(response.headers.get('oci-filters-applied')).to.equal(null);
    const index = (await response.json()) as ReferrersIndex;
    expect(index.schemaVersion).to.equal(2);
    expect(index.mediaType).to.equal(OCI_INDEX);
    const byDigest = new Map(index.manifests.map((m) => [m.digest, m]));
    expect([...byDigest.keys()].sort()).to.deep.equal([sbomDigest, signatureDigest].sort());
    const sbom = byDigest.get(sbomDigest)!;
    expect(sbom.artifactType).to.equal(SBOM_TYPE);
    expect(sbom.mediaType).to.equal(OCI_MANIFEST);
    expect(sbom.size).to.equal(readFileSync(path.join(work, 'sbom-manifest.json')).length);
    expect(sbom.annotations?.['org.opencontainers.image.created']).to.be.a('string');

    const filtered = await fetch(`${gateway.url}/v2/e2e/art/referrers/${artifactDigest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    expect(filtered.status).to.equal(200);
    expect(filtered.headers.get('content-type')).to.equal(OCI_INDEX);
    expect(filtered.headers.get('oci-filters-applied')).to.equal('artifactType');
    expect(((await filtered.json()) as ReferrersIndex).manifests.map((m) => m.digest)).to.deep.equal([sbomDigest]);
  });

  it('answers a manifest PUT with a subject with OCI-Subject, and oras discover then lists it', async () => {
    const layer = Buffer.from('pushed with fetch\n');
    const upload = await fetch(`${gateway.url}/v2/e2e/art/blobs/uploads/?digest=${sha256(layer)}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: layer,
    });
    expect(upload.status).to.equal(201);
    const pushed = JSON.parse(pushedManifestBytes.toString('utf8')) as ImageManifest;
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: FETCH_TYPE,
      config: EMPTY_CONFIG,
      layers: [{ mediaType: 'text/plain', digest: sha256(layer), size: layer.length }],
      subject: { mediaType: OCI_MANIFEST, digest: artifactDigest, size: pushedManifestBytes.length },
      annotations: { 'org.example.pushed-by': 'fetch' },
    };
    expect(pushed.layers).to.have.length(1);
    const body = Buffer.from(JSON.stringify(manifest));
    const put = await fetch(`${gateway.url}/v2/e2e/art/manifests/${sha256(body)}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(put.status).to.equal(201);
    expect(put.headers.get('oci-subject')).to.equal(artifactDigest);
    expect(put.headers.get('docker-content-digest')).to.equal(sha256(body));

    const found = await discover(`${repo}@${artifactDigest}`, '--artifact-type', FETCH_TYPE);
    expect(found.manifests).to.have.length(1);
    expect(found.manifests[0].digest).to.equal(sha256(body));
    expect(found.manifests[0].annotations?.['org.example.pushed-by']).to.equal('fetch');

    // A manifest without a subject gets no OCI-Subject header.
    const plain = Buffer.from(JSON.stringify({ ...manifest, subject: undefined, annotations: { 'org.example.plain': 'yes' } }));
    const plainPut = await fetch(`${gateway.url}/v2/e2e/art/manifests/plain`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: plain });
    expect(plainPut.status).to.equal(201);
    expect(plainPut.headers.get('oci-subject')).to.equal(null);
  });

  it('pulls the attached SBOM by its digest with oras pull', async () => {
    const out = path.join(work, 'pulled-sbom');
    mkdirSync(out, { recursive: true });
    await oras(['pull', '--plain-http', `${repo}@${sbomDigest}`, '-o', out]);
    expect(readFileSync(path.join(out, 'sbom.json'), 'utf8')).to.equal(sbomText);
  });
});
