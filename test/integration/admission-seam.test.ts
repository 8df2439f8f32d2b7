/**
 * The quarantine seam: every manifest PUT is stored staged and handed to admit(); only
 * an admitted decision moves content to committed storage and sets tags. Blobs are files
 * in the store's areas; a manifest's bytes are kept in its content row of the database.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { AdmissionDecision, AdmissionRequest } from '../../src/registry/admission.js';
import { parseDigest } from '../../src/registry/names.js';
import { FsBlobStore } from '../../src/storage/fs.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { errorCode, OciClient, sha256 } from '../helpers/oci.js';

function contentPath(root: string, area: 'staging' | 'committed', digest: string): string {
  const [alg, hex] = digest.split(':');
  return path.join(root, area, alg, hex.slice(0, 2), hex);
}

/** An image manifest with a config and no layers. */
function configOnlyManifest(config: string, size: number): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size }, layers: [],
  }));
}

describe('admission seam (staged → committed)', () => {
  let gw: TestGateway;
  let c: OciClient;
  let decision: AdmissionDecision = { outcome: 'admitted' };
  const seen: AdmissionRequest[] = [];

  before(async () => {
    gw = await startTestGateway('pglite', {
      options: {
        admit: async (request) => {
          seen.push(request);
          return decision;
        },
      },
    });
    c = new OciClient(gw.url);
  });
  after(async () => gw.stop());

  it('commits blobs, then the manifest, and sets the tag when admitted', async () => {
    decision = { outcome: 'admitted' };
    const { digest, body, manifest } = await c.pushImage('seam/app', 'ok');
    const layer = (manifest.layers as Array<{ digest: string }>)[0].digest;
    for (const d of [layer, (manifest.config as { digest: string }).digest]) {
      expect(existsSync(contentPath(gw.root, 'committed', d)), d).to.equal(true);
      expect(existsSync(contentPath(gw.root, 'staging', d)), d).to.equal(false);
      expect(await gw.registry.metadata.getBlob(d)).to.deep.include({ state: 'committed', inline: false });
    }
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ state: 'committed', inline: true });
    expect((await gw.registry.metadata.inlineBody(digest))!.equals(body)).to.equal(true);
    for (const area of ['staging', 'committed'] as const) expect(existsSync(contentPath(gw.root, area, digest)), area).to.equal(false);
    expect((await gw.registry.metadata.getManifest('seam/app', digest))!.state).to.equal('committed');
    expect(seen.at(-1)).to.deep.include({ repository: 'seam/app', digest, tags: ['ok'] });
  });

  it('serves a manifest kept in the database by the blob endpoint too, with ranges', async () => {
    decision = { outcome: 'admitted' };
    const { digest, body } = await c.pushImage('seam/blobget', 'v1');
    const whole = await c.request('GET', `/v2/seam/blobget/blobs/${digest}`);
    expect(whole.status).to.equal(200);
    expect(whole.headers.get('docker-content-digest')).to.equal(digest);
    expect(Buffer.from(await whole.arrayBuffer()).equals(body)).to.equal(true);
    const head = await c.request('HEAD', `/v2/seam/blobget/blobs/${digest}`);
    expect(head.headers.get('content-length')).to.equal(String(body.length));
    const part = await c.request('GET', `/v2/seam/blobget/blobs/${digest}`, { headers: { Range: 'bytes=2-9' } });
    expect(part.status).to.equal(206);
    expect(part.headers.get('content-range')).to.equal(`bytes 2-9/${body.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(2, 10))).to.equal(true);
  });

  it('keeps serving and commits a manifest whose bytes are a file (stored before manifests were kept in the database)', async () => {
    decision = { outcome: 'pending', waitingFor: ['scan'] };
    const config = await c.pushBlob('seam/legacy', '{"legacy":1}');
    const body = configOnlyManifest(config, 12);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    // As a gateway before migration 009 stored it: a content row without bytes, the bytes a staged file.
    await gw.registry.metadata.linkBlob('seam/legacy', digest, body.length);
    await new FsBlobStore(gw.root).putStaged(parseDigest(digest), body);
    expect((await c.putManifest('seam/legacy', 'v1', body)).status).to.equal(201);
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ state: 'staged', inline: false });
    const request = seen.at(-1)!;
    expect(request.contentLocations?.get(digest)).to.equal('staged');
    await gw.registry.commitManifest('seam/legacy', digest, request.manifest, request.tags, request.contentLocations);
    expect(existsSync(contentPath(gw.root, 'committed', digest))).to.equal(true);
    expect(existsSync(contentPath(gw.root, 'staging', digest))).to.equal(false);
    const blob = await c.request('GET', `/v2/seam/legacy/blobs/${digest}`);
    expect(Buffer.from(await blob.arrayBuffer()).equals(body)).to.equal(true);
  });

  it('keeps small uploaded blobs in memory for the gate to read back, and only as the content they were verified to be', async () => {
    const fileGone = async (repo: string, digest: string) => {
      rmSync(contentPath(gw.root, 'staging', digest));
      return gw.registry.readContent(repo, digest, 1 << 20).then((b) => b.toString(), (err: Error) => `error: ${err.message}`);
    };
    // Whole in one request (POST + PUT), and in two chunks (PATCH + PUT with the last one).
    const small = await c.pushBlob('seam/small', '{"config":"small"}');
    expect(await fileGone('seam/small', small)).to.equal('{"config":"small"}');
    const start = await c.request('POST', '/v2/seam/small/blobs/uploads/');
    const location = c.absolute(start.headers.get('location')!);
    const patch = await c.request('PATCH', location, { body: 'first,', headers: { 'Content-Range': '0-5', 'Content-Type': 'application/octet-stream' } });
    expect(patch.status).to.equal(202);
    const chunked = sha256('first,second');
    const next = c.absolute(patch.headers.get('location')!);
    const put = await c.request('PUT', `${next}${next.includes('?') ? '&' : '?'}digest=${chunked}`, { body: 'second', headers: { 'Content-Range': '6-11', 'Content-Type': 'application/octet-stream' } });
    expect(put.status, await put.clone().text()).to.equal(201);
    expect(await fileGone('seam/small', chunked)).to.equal('first,second');
    // Larger than 64 KiB: read from the store.
    const large = await c.pushBlob('seam/small', 'x'.repeat(70 * 1024));
    expect(await fileGone('seam/small', large)).to.match(/^error: /);
  });

  it('keeps a pending image staged, untagged, and says what it waits for', async () => {
    decision = { outcome: 'pending', waitingFor: ['signature'] };
    const { digest, manifest, res } = await c.pushImage('seam/app', 'pending');
    expect(res.headers.get('warning')).to.match(/^299 - ".*quarantine.*signature"$/);
    const layer = (manifest.layers as Array<{ digest: string }>)[0].digest;
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ state: 'staged', inline: true });
    expect(existsSync(contentPath(gw.root, 'staging', layer))).to.equal(true);
    expect(existsSync(contentPath(gw.root, 'committed', layer))).to.equal(false);
    expect((await gw.registry.metadata.getManifest('seam/app', digest))!.state).to.equal('staged');
    // The tag waits for admission: readers do not resolve it; pushers (here everyone, auth is off) do.
    expect(await gw.registry.metadata.getManifestByTag('seam/app', 'pending')).to.equal(null);
    expect((await gw.registry.metadata.getManifestByTag('seam/app', 'pending', true))!.digest).to.equal(digest);
    expect(await gw.registry.metadata.listTags('seam/app', undefined, 10, false)).to.not.include('pending');
    expect((await gw.registry.metadata.getBlob(layer))!.state).to.equal('staged');
  });

  it('answers a denial with 403 DENIED and the reasons, and commits nothing', async () => {
    decision = { outcome: 'denied', reasons: ['rule no-root: image runs as root'] };
    const config = await c.pushBlob('seam/denied', '{"config":1}');
    const body = configOnlyManifest(config, 12);
    const res = await c.putManifest('seam/denied', 'v1', body);
    expect(res.status).to.equal(403);
    const json = (await res.json()) as { errors: Array<{ code: string; message: string; detail: { reasons: string[] } }> };
    expect(json.errors[0].code).to.equal('DENIED');
    expect(json.errors[0].message).to.include('image runs as root');
    expect(json.errors[0].detail.reasons).to.deep.equal(['rule no-root: image runs as root']);
    expect(existsSync(contentPath(gw.root, 'committed', config))).to.equal(false);
    expect(await gw.registry.metadata.getManifestByTag('seam/denied', 'v1')).to.equal(null);
    const other = await c.request('GET', '/v2/seam/denied/manifests/v2');
    expect(other.status).to.equal(404);
    expect(await errorCode(other)).to.equal('MANIFEST_UNKNOWN');
  });

  it('commits a pending image later through commitManifest, as the gate will', async () => {
    decision = { outcome: 'pending', waitingFor: ['scan'] };
    const { digest } = await c.pushImage('seam/later', 'v1');
    const request = seen.at(-1)!;
    await gw.registry.commitManifest('seam/later', digest, request.manifest, request.tags);
    const res = await c.request('GET', '/v2/seam/later/manifests/v1');
    expect(res.status).to.equal(200);
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ state: 'committed', inline: true });
  });
});
