/**
 * The quarantine seam: every manifest PUT is stored staged and handed to admit(); only
 * an admitted decision moves content to committed storage and sets tags. Blobs larger than
 * 64 KiB are files in the store's areas; a manifest's bytes, and a smaller blob's, are kept
 * in its content row of the database.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AdmissionDecision, AdmissionRequest } from '../../src/registry/admission.js';
import { parseDigest } from '../../src/registry/names.js';
import { FsBlobStore } from '../../src/storage/fs.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { SMALL_BLOB_BYTES } from '../../src/registry/registry.js';
import { errorCode, fileBlob, OciClient, sha256 } from '../helpers/oci.js';

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
    const { digest, body, manifest } = await c.pushImage('seam/app', 'ok', { layers: [fileBlob('layer')] });
    const layer = (manifest.layers as Array<{ digest: string }>)[0].digest;
    expect(existsSync(contentPath(gw.root, 'committed', layer))).to.equal(true);
    expect(existsSync(contentPath(gw.root, 'staging', layer))).to.equal(false);
    expect(await gw.registry.metadata.getBlob(layer)).to.deep.include({ state: 'committed', inline: false });
    // The config (a small blob) and the manifest are kept in the database: committed by their state alone.
    for (const d of [(manifest.config as { digest: string }).digest, digest]) {
      expect(await gw.registry.metadata.getBlob(d), d).to.deep.include({ state: 'committed', inline: true });
      for (const area of ['staging', 'committed'] as const) expect(existsSync(contentPath(gw.root, area, d)), `${d} ${area}`).to.equal(false);
    }
    expect((await gw.registry.metadata.inlineBody(digest))!.equals(body)).to.equal(true);
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

  it('keeps blobs of up to 64 KiB in the database, however they were sent, and larger ones as files', async () => {
    const kept = async (repo: string, digest: string, content: string) => {
      expect(await gw.registry.metadata.getBlob(digest), digest).to.deep.include({ state: 'staged', inline: true });
      expect((await gw.registry.metadata.inlineBody(digest))!.toString()).to.equal(content);
      for (const area of ['staging', 'committed'] as const) expect(existsSync(contentPath(gw.root, area, digest)), area).to.equal(false);
      const res = await c.request('GET', `/v2/${repo}/blobs/${digest}`);
      expect(await res.text()).to.equal(content);
    };
    // Whole in one request (POST + PUT), its bytes kept in memory as they came.
    await kept('seam/small', await c.pushBlob('seam/small', '{"config":"small"}'), '{"config":"small"}');
    // In two chunks (PATCH + PUT with the last one).
    const start = await c.request('POST', '/v2/seam/small/blobs/uploads/');
    const location = c.absolute(start.headers.get('location')!);
    const patch = await c.request('PATCH', location, { body: 'first,', headers: { 'Content-Range': '0-5', 'Content-Type': 'application/octet-stream' } });
    expect(patch.status).to.equal(202);
    const chunked = sha256('first,second');
    const next = c.absolute(patch.headers.get('location')!);
    const put = await c.request('PUT', `${next}${next.includes('?') ? '&' : '?'}digest=${chunked}`, { body: 'second', headers: { 'Content-Range': '6-11', 'Content-Type': 'application/octet-stream' } });
    expect(put.status, await put.clone().text()).to.equal(201);
    await kept('seam/small', chunked, 'first,second');
    // Streamed without a length (chunked transfer encoding): not kept in memory, read back from the upload's file.
    const streamed = 's'.repeat(SMALL_BLOB_BYTES);
    const begin = await c.request('POST', '/v2/seam/small/blobs/uploads/');
    const status = await new Promise<number>((resolve, reject) => {
      const to = new URL(`${begin.headers.get('location')!}${begin.headers.get('location')!.includes('?') ? '&' : '?'}digest=${sha256(streamed)}`, gw.url);
      const req = http.request(to, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write(streamed.slice(0, 1000));
      req.end(streamed.slice(1000));
    });
    expect(status).to.equal(201);
    await kept('seam/small', sha256(streamed), streamed);
    // One byte more: a file in the staging area.
    const large = fileBlob('large');
    const digest = await c.pushBlob('seam/small', large);
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ state: 'staged', inline: false });
    expect(existsSync(contentPath(gw.root, 'staging', digest))).to.equal(true);
    expect(await gw.registry.readContent('seam/small', digest, 1 << 20).then((b) => b.toString())).to.equal(large);
    // No upload left a scratch file behind.
    expect(readdirSync(path.join(gw.root, 'uploads'))).to.deep.equal([]);
  });

  it('takes back into the database a small blob whose file was lost', async () => {
    const content = `{"config":"lost ${Math.random()}"}`;
    const digest = sha256(content);
    // As a gateway before small blobs were kept in the database recorded it, its file since gone.
    await gw.registry.metadata.linkBlob('seam/lost', digest, content.length);
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ inline: false });
    await c.pushBlob('seam/lost', content);
    expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ inline: true });
    expect(await (await c.request('GET', `/v2/seam/lost/blobs/${digest}`)).text()).to.equal(content);
  });

  it('keeps a pending image staged, untagged, and says what it waits for', async () => {
    decision = { outcome: 'pending', waitingFor: ['signature'] };
    const { digest, manifest, res } = await c.pushImage('seam/app', 'pending', { layers: [fileBlob('pending layer')] });
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
    expect((await gw.registry.metadata.getBlob(config))!.state).to.equal('staged');
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
