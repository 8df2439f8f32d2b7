/** The distribution API over HTTP, end to end inside one process, on PGlite and PostgreSQL. */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { DATABASE_KINDS, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { errorCode, fileBlob, OCI_INDEX, OCI_MANIFEST, OciClient, sha256, sha512 } from '../helpers/oci.js';
import { SMALL_BLOB_BYTES } from '../../src/registry/registry.js';
import { SOCKET_INGEST_MIN_BYTES } from '../../src/storage/socket-ingest.js';

/** A request with its whole body over a connection of its own: status, headers, body. */
function send(url: string, method: string, body: Buffer, agent?: http.Agent): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    // Each connection asks to be kept open, so that an answer's Connection: close is the server's.
    const req = http.request(url, { method, agent: agent ?? new http.Agent({ keepAlive: true, maxSockets: 1 }), headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.length) } });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const ZERO = `sha256:${'0'.repeat(64)}`;

for (const kind of DATABASE_KINDS) {
  describe(`distribution API on ${kind}`, function () {
    let gw: TestGateway;
    let c: OciClient;

    before(async () => {
      gw = await startTestGateway(kind, { config: (cfg) => void (cfg.limits.maxManifestBytes = 64 * 1024) });
      c = new OciClient(gw.url);
    });
    after(async () => gw.stop());

    describe('base and errors', () => {
      it('answers /v2/ with 200 and the API version header', async () => {
        const res = await c.request('GET', '/v2/');
        expect(res.status).to.equal(200);
        expect(res.headers.get('docker-distribution-api-version')).to.equal('registry/2.0');
        expect(res.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
      });

      it('rejects bad names with NAME_INVALID and never touches the filesystem outside the root', async () => {
        for (const p of ['/v2/UPPER/blobs/' + ZERO, '/v2/a/..%2f..%2fetc/blobs/' + ZERO, '/v2/a%2F..%2F../tags/list']) {
          const res = await c.request('GET', p);
          expect(res.status, p).to.equal(400);
          expect(await errorCode(res)).to.equal('NAME_INVALID');
        }
      });

      it('answers a malformed digest with 400 DIGEST_INVALID', async () => {
        for (const p of ['/v2/x/blobs/sha256:nothex', '/v2/x/blobs/md5:abc', '/v2/x/referrers/sha256:short']) {
          const res = await c.request('GET', p);
          expect(res.status, p).to.equal(400);
          expect(await errorCode(res)).to.equal('DIGEST_INVALID');
        }
      });

      it('answers a NUL character anywhere in the URL with 400, never 500', async () => {
        await c.pushImage('m/nul', 'v1');
        for (const p of ['/v2/m/nul/tags/list?last=%00', '/v2/_catalog?last=a%00b', '/v2/m/nul/manifests/v1%00', '/gateway/v1/audit?repository=%00']) {
          const res = await c.request('GET', p);
          expect(res.status, p).to.equal(400);
          expect(await errorCode(res), p).to.equal('UNSUPPORTED');
        }
      });

      it('answers an unknown method with 405 UNSUPPORTED and an Allow header', async () => {
        const res = await c.request('POST', '/v2/x/tags/list');
        expect(res.status).to.equal(405);
        expect(res.headers.get('allow')).to.equal('GET, HEAD');
        expect(await errorCode(res)).to.equal('UNSUPPORTED');
        const manifest = await c.request('POST', '/v2/x/manifests/t');
        expect(manifest.headers.get('allow')).to.equal('GET, HEAD, PUT, DELETE');
      });

      it('answers HEAD errors with the GET error\'s headers, so the connection stays reusable', async () => {
        const unknown = `/v2/x/blobs/${ZERO}`;
        const get = await c.request('GET', unknown);
        const body = await get.text();
        for (const p of [unknown, '/v2/x/manifests/nope', '/v2/x/blobs/sha256:nothex', '/metrics']) {
          const head = await c.request('HEAD', p);
          expect(await head.text(), p).to.equal('');
          expect(head.headers.get('content-length'), p).to.match(/^[1-9]\d*$/);
        }
        const head = await c.request('HEAD', unknown);
        expect(head.status).to.equal(404);
        expect(head.headers.get('content-type')).to.equal('application/json');
        expect(head.headers.get('content-length')).to.equal(String(Buffer.byteLength(body)));
        // Node's http client frames a response by its headers: after a HEAD without them it
        // closes the connection instead of reusing it.
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
          const reused: boolean[] = [];
          for (const [method, p] of [['HEAD', unknown], ['HEAD', '/metrics'], ['GET', '/v2/']]) {
            reused.push(
              await new Promise<boolean>((resolve, reject) => {
                const req = http.request(`${gw.url}${p}`, { method, agent }, (res) => res.resume().on('end', () => resolve(req.reusedSocket)));
                req.on('error', reject).end();
              }),
            );
          }
          expect(reused).to.deep.equal([false, true, true]);
        } finally {
          agent.destroy();
        }
      });

      it('answers HEAD on a route without GET with 405 and an Allow header, never 500', async () => {
        const res = await c.request('HEAD', '/v2/x/blobs/uploads/');
        expect(res.status).to.equal(405);
        expect(res.headers.get('allow')).to.equal('POST');
      });

      it('decodes percent-escapes in the path as Distribution does, and refuses malformed ones with 400', async () => {
        const { digest, manifest } = await c.pushImage('m/pct', 'v1');
        const configDigest = manifest.config.digest;
        const byTag = await c.request('GET', '/v2/m/pct/manifests/%76%31');
        expect(byTag.status).to.equal(200);
        expect(byTag.headers.get('docker-content-digest')).to.equal(digest);
        const blob = await c.request('HEAD', `/v2/m/pct/blobs/${encodeURIComponent(configDigest)}`);
        expect(blob.status).to.equal(200);
        expect(blob.headers.get('docker-content-digest')).to.equal(configDigest);
        const malformed = await c.request('GET', '/v2/m/pct/manifests/%zz');
        expect(malformed.status).to.equal(400);
        expect(await errorCode(malformed)).to.equal('NAME_INVALID');
      });

      it('answers HEAD wherever GET works, without a body', async () => {
        const res = await c.request('HEAD', `/v2/x/referrers/${ZERO}`);
        expect(res.status).to.equal(200);
        expect(res.headers.get('content-type')).to.equal(OCI_INDEX);
        expect(await res.text()).to.equal('');
      });
    });

    describe('blob uploads', () => {
      it('takes content stored already as a new upload of it, and keeps one copy of its bytes', async () => {
        // A file in the blob store, and a small blob kept in the database.
        for (const data of [fileBlob(`the same bytes, pushed twice ${kind}`), `the same small bytes, pushed twice ${kind}`]) {
          const digest = await c.pushBlob('up/first', data);
          const again = await c.pushBlob('up/second', data);
          expect(again).to.equal(digest);
          for (const repo of ['up/first', 'up/second']) {
            const res = await c.request('GET', `/v2/${repo}/blobs/${digest}`);
            expect(res.status, repo).to.equal(200);
            expect(await res.text()).to.equal(data);
          }
          // The second upload's file is gone, not staged again beside the first.
          const hex = digest.slice('sha256:'.length);
          const inline = data.length <= SMALL_BLOB_BYTES;
          expect(await gw.registry.metadata.getBlob(digest)).to.deep.include({ inline });
          expect(existsSync(path.join(gw.root, 'staging', 'sha256', hex.slice(0, 2), hex))).to.equal(!inline);
          expect(readdirSync(path.join(gw.root, 'uploads'))).to.deep.equal([]);
        }
      });

      it('accepts a monolithic POST+PUT and serves the blob with digest headers', async () => {
        const digest = await c.pushBlob('up/mono', 'monolithic bytes');
        const head = await c.request('HEAD', `/v2/up/mono/blobs/${digest}`);
        expect(head.status).to.equal(200);
        expect(head.headers.get('docker-content-digest')).to.equal(digest);
        expect(head.headers.get('content-length')).to.equal('16');
        const get = await c.request('GET', `/v2/up/mono/blobs/${digest}`);
        expect(await get.text()).to.equal('monolithic bytes');
      });

      it('accepts a single POST with ?digest= and the body', async () => {
        const data = 'single post';
        const res = await c.request('POST', `/v2/up/single/blobs/uploads/?digest=${sha256(data)}`, { body: data });
        expect(res.status).to.equal(201);
        expect(res.headers.get('location')).to.equal(`/v2/up/single/blobs/${sha256(data)}`);
      });

      it('reads a large body of known length straight from its socket, answers with Connection: close, and stores the exact bytes', async () => {
        const data = randomBytes(SOCKET_INGEST_MIN_BYTES + 12345);
        const start = await c.request('POST', '/v2/up/big/blobs/uploads/');
        const put = await send(new URL(`${start.headers.get('location')}?digest=${sha256(data)}`, gw.url).toString(), 'PUT', data);
        expect(put.status, put.text).to.equal(201);
        // Node's parser never saw the body, so the connection cannot carry another request.
        expect(put.headers.connection).to.equal('close');
        const get = await c.request('GET', `/v2/up/big/blobs/${sha256(data)}`);
        expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
        // A single POST, by sha512.
        const single = await send(`${gw.url}/v2/up/big/blobs/uploads/?digest=${sha512(data)}`, 'POST', data);
        expect(single.status, single.text).to.equal(201);
        expect(single.headers.connection).to.equal('close');
        const head = await c.request('HEAD', `/v2/up/big/blobs/${sha512(data)}`);
        expect(head.headers.get('content-length')).to.equal(String(data.length));
        // A body below the size is read through Node, and the connection stays open.
        const small = randomBytes(SOCKET_INGEST_MIN_BYTES - 1);
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        const kept = await send(`${gw.url}/v2/up/big/blobs/uploads/?digest=${sha256(small)}`, 'POST', small, agent);
        agent.destroy();
        expect(kept.status).to.equal(201);
        expect(kept.headers.connection).to.equal('keep-alive');
      });

      it('refuses a large body read from its socket whose digest does not match, and keeps its bytes for a retry', async () => {
        const data = randomBytes(SOCKET_INGEST_MIN_BYTES + 1);
        const start = await c.request('POST', '/v2/up/bigbad/blobs/uploads/');
        const location = start.headers.get('location')!;
        const put = await send(new URL(`${location}?digest=${sha256('other')}`, gw.url).toString(), 'PUT', data);
        expect(put.status).to.equal(400);
        expect(JSON.parse(put.text).errors[0].code).to.equal('DIGEST_INVALID');
        expect((await c.request('GET', location)).headers.get('range')).to.equal(`0-${data.length - 1}`);
        const retry = await c.request('PUT', `${location}?digest=${sha256(data)}`);
        expect(retry.status).to.equal(201);
      });

      it('leaves an upload as it was when the client drops the connection in the middle of a large body read from its socket', async () => {
        const data = randomBytes(SOCKET_INGEST_MIN_BYTES + 1);
        const start = await c.request('POST', '/v2/up/bigdrop/blobs/uploads/');
        const location = start.headers.get('location')!;
        const id = location.split('/').pop()!;
        const req = http.request(new URL(`${location}?digest=${sha256(data)}`, gw.url), {
          method: 'PUT',
          agent: false,
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(data.length) },
        });
        req.on('error', () => undefined);
        req.write(data.subarray(0, 2 * 1024 * 1024));
        const file = path.join(gw.root, 'uploads', id);
        const size = () => (existsSync(file) ? statSync(file).size : 0);
        for (let i = 0; i < 100 && size() === 0; i++) await new Promise((r) => setTimeout(r, 20));
        expect(size()).to.be.greaterThan(0);
        req.destroy();
        // The gateway sees the connection end, and cuts the file back to where the upload was.
        for (let i = 0; i < 250 && size() !== 0; i++) await new Promise((r) => setTimeout(r, 20));
        expect(size()).to.equal(0);
        let retry = await send(new URL(`${location}?digest=${sha256(data)}`, gw.url).toString(), 'PUT', data);
        // The failed request may still hold the upload for a moment after the cut (416: another request writes to it).
        for (let i = 0; i < 20 && retry.status === 416; i++) {
          await new Promise((r) => setTimeout(r, 50));
          retry = await send(new URL(`${location}?digest=${sha256(data)}`, gw.url).toString(), 'PUT', data);
        }
        expect(retry.status, retry.text).to.equal(201);
        const get = await c.request('GET', `/v2/up/bigdrop/blobs/${sha256(data)}`);
        expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
      });

      it('accepts sha512 uploads and serves them under the sha512 digest', async () => {
        const data = 'sha512 content';
        const start = await c.request('POST', '/v2/up/s512/blobs/uploads/?digest-algorithm=sha512');
        expect(start.status).to.equal(202);
        const put = await c.request('PUT', `${start.headers.get('location')}?digest=${sha512(data)}`, { body: data });
        expect(put.status).to.equal(201);
        const get = await c.request('GET', `/v2/up/s512/blobs/${sha512(data)}`);
        expect(get.headers.get('docker-content-digest')).to.equal(sha512(data));
        expect(await get.text()).to.equal(data);
      });

      it('hashes again from storage when the client names another algorithm at the end', async () => {
        const data = 'decided late';
        const start = await c.request('POST', '/v2/up/late/blobs/uploads/');
        const put = await c.request('PUT', `${start.headers.get('location')}?digest=${sha512(data)}`, { body: data });
        expect(put.status).to.equal(201);
      });

      it('refuses to cancel an upload while its closing PUT runs (409), so no cut or empty file is stored under the digest', async () => {
        const data = Buffer.alloc(2 * 1024 * 1024, 'z');
        const start = await c.request('POST', '/v2/up/cancel-race/blobs/uploads/');
        const location = start.headers.get('location')!;
        expect((await c.request('PATCH', location, { body: data.subarray(0, 1024 * 1024) })).status).to.equal(202);
        // The closing PUT sends half its chunk and waits: the upload is busy while it does.
        const put = http.request(`${gw.url}${location}?digest=${sha256(data)}`, { method: 'PUT', headers: { 'Content-Length': String(1024 * 1024) } });
        const answered = new Promise<number>((resolve, reject) => put.on('response', (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject));
        put.write(data.subarray(1024 * 1024, 1536 * 1024));
        // Once the PUT holds the upload (the registry marks it busy), an empty PATCH is refused with 416.
        const busy = (gw.registry as unknown as { busyUploads: Set<string> }).busyUploads;
        const id = location.split('/').pop()!;
        for (let i = 0; !busy.has(id); i++) {
          expect(i, 'the PUT never took the upload').to.be.lessThan(500);
          await new Promise((r) => setTimeout(r, 10));
        }
        expect((await c.request('PATCH', location, { body: '' })).status).to.equal(416);
        const cancel = await c.request('DELETE', location);
        expect(cancel.status).to.equal(409);
        expect(await errorCode(cancel)).to.equal('BLOB_UPLOAD_INVALID');
        put.end(data.subarray(1536 * 1024));
        expect(await answered).to.equal(201);
        const get = await c.request('GET', `/v2/up/cancel-race/blobs/${sha256(data)}`);
        expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
        expect((await c.request('DELETE', location)).status).to.equal(404);
      });

      it('refuses writes with 507 while they would eat into the storage reserve, and still serves reads', async () => {
        const { digest, manifest } = await c.pushImage('up/reserve', 'v1');
        const start = await c.request('POST', '/v2/up/reserve/blobs/uploads/');
        const limits = gw.registry.limits as { reserveBytes?: number };
        const before = limits.reserveBytes;
        expect(before, 'the default reserve').to.equal(256 * 1024 * 1024);
        limits.reserveBytes = Number.MAX_SAFE_INTEGER;
        try {
          const refused = [
            await c.request('POST', '/v2/up/reserve/blobs/uploads/'),
            await c.request('PUT', `${start.headers.get('location')}?digest=${sha256('x')}`, { body: 'x' }),
            await c.putManifest('up/reserve', 'v2', Buffer.from(JSON.stringify({ ...manifest, annotations: { n: '2' } }))),
          ];
          for (const res of refused) {
            expect(res.status).to.equal(507);
            expect(((await res.json()) as { errors: Array<{ message: string }> }).errors[0].message).to.match(/storage\.reserveBytes/);
          }
          expect((await c.request('GET', `/v2/up/reserve/manifests/${digest}`)).status).to.equal(200);
          expect((await c.request('GET', `/v2/up/reserve/blobs/${manifest.config.digest}`)).status).to.equal(200);
          expect((await c.request('GET', start.headers.get('location')!)).status).to.equal(204);
        } finally {
          limits.reserveBytes = before;
        }
        expect((await c.request('PUT', `${start.headers.get('location')}?digest=${sha256('x')}`, { body: 'x' })).status).to.equal(201);
      });

      it('answers an upload id that is not a UUID with 404 BLOB_UPLOAD_UNKNOWN, never 500', async () => {
        for (const id of ['-'.repeat(36), '0123456789abcdef0123456789abcdef0123']) {
          const res = await c.request('GET', `/v2/up/ids/blobs/uploads/${id}`);
          expect(res.status, id).to.equal(404);
          expect(await errorCode(res)).to.equal('BLOB_UPLOAD_UNKNOWN');
        }
      });

      it('takes chunks in order, reports progress and refuses out-of-order or repeated chunks with 416', async () => {
        const start = await c.request('POST', '/v2/up/chunked/blobs/uploads/');
        const location = start.headers.get('location')!;
        expect(start.headers.get('range')).to.equal('0-0');
        const first = await c.request('PATCH', location, { body: 'abcde', headers: { 'Content-Range': '0-4', 'Content-Type': 'application/octet-stream' } });
        expect(first.status).to.equal(202);
        expect(first.headers.get('range')).to.equal('0-4');
        const again = await c.request('PATCH', location, { body: 'abcde', headers: { 'Content-Range': '0-4' } });
        expect(again.status).to.equal(416);
        expect(again.headers.get('range')).to.equal('0-4');
        const skip = await c.request('PATCH', location, { body: 'zz', headers: { 'Content-Range': '8-9' } });
        expect(skip.status).to.equal(416);
        // The refused chunk's body is read and dropped: the connection stays for the next request.
        expect(skip.headers.get('connection')).to.not.equal('close');
        const status = await c.request('GET', location);
        expect(status.status).to.equal(204);
        expect(status.headers.get('range')).to.equal('0-4');
        expect(status.headers.get('location')).to.equal(location);
        const second = await c.request('PATCH', location, { body: 'fgh', headers: { 'Content-Range': '5-7' } });
        expect(second.headers.get('range')).to.equal('0-7');
        const put = await c.request('PUT', `${location}?digest=${sha256('abcdefgh')}`);
        expect(put.status).to.equal(201);
        expect(await (await c.request('GET', `/v2/up/chunked/blobs/${sha256('abcdefgh')}`)).text()).to.equal('abcdefgh');
      });

      it('appends PATCH bodies without Content-Range (streamed uploads) and a last chunk on PUT', async () => {
        const start = await c.request('POST', '/v2/up/stream/blobs/uploads/');
        const location = start.headers.get('location')!;
        await c.request('PATCH', location, { body: 'stream-1;' });
        await c.request('PATCH', location, { body: 'stream-2;' });
        const put = await c.request('PUT', `${location}?digest=${sha256('stream-1;stream-2;end')}`, { body: 'end' });
        expect(put.status).to.equal(201);
      });

      it('refuses a digest that does not match and keeps the upload for a retry', async () => {
        const start = await c.request('POST', '/v2/up/bad/blobs/uploads/');
        const location = start.headers.get('location')!;
        const put = await c.request('PUT', `${location}?digest=${sha256('other')}`, { body: 'actual' });
        expect(put.status).to.equal(400);
        expect(await errorCode(put)).to.equal('DIGEST_INVALID');
        expect((await c.request('GET', `/v2/up/bad/blobs/${sha256('other')}`)).status).to.equal(404);
        const status = await c.request('GET', location);
        expect(status.status).to.equal(204);
        expect(status.headers.get('range')).to.equal('0-5');
        // The retry names the right digest of the bytes kept.
        const retry = await c.request('PUT', `${location}?digest=${sha256('actual')}`);
        expect(retry.status).to.equal(201);
        expect(await (await c.request('GET', `/v2/up/bad/blobs/${sha256('actual')}`)).text()).to.equal('actual');
      });

      it('answers 500 when the bytes cannot be moved into the staging area, records nothing, and keeps the upload for a retry', async () => {
        const content = fileBlob('unstaged');
        const digest = sha256(content);
        const store = gw.registry.store;
        const promote = store.promoteUpload;
        const start = await c.request('POST', '/v2/up/unstaged/blobs/uploads/');
        const location = start.headers.get('location')!;
        // The session's statement runs while the file is renamed: a failed rename must take it back.
        store.promoteUpload = async () => {
          await new Promise((r) => setTimeout(r, 50));
          throw Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
        };
        try {
          expect((await c.request('PUT', `${location}?digest=${digest}`, { body: content })).status).to.equal(500);
        } finally {
          store.promoteUpload = promote;
        }
        expect((await c.request('HEAD', `/v2/up/unstaged/blobs/${digest}`)).status).to.equal(404);
        expect(await gw.registry.metadata.getBlob(digest)).to.equal(null);
        expect((await c.request('GET', location)).status).to.equal(204);
        expect((await c.request('PUT', `${location}?digest=${digest}`, { body: content })).status).to.equal(201);
        expect(await (await c.request('GET', `/v2/up/unstaged/blobs/${digest}`)).text()).to.equal(content);
      });

      /** An image manifest naming a small config pushed now and the given layers (pushed before). */
      async function manifestNaming(repo: string, layers: string[]): Promise<Buffer> {
        const config = JSON.stringify({ architecture: 'amd64', os: 'linux', seed: Math.random() });
        const configDigest = await c.pushBlob(repo, config);
        return Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_MANIFEST,
            config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: Buffer.byteLength(config) },
            layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(l), size: Buffer.byteLength(l) })),
          }),
        );
      }

      it('answers a blob before its bytes are flushed, and accepts a manifest that names it only once they are', async () => {
        const store = gw.registry.store;
        const flush = store.flushContent;
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        const flushed: string[] = [];
        store.flushContent = async (area, digest, upload) => {
          await held;
          await flush.call(store, area, digest, upload);
          flushed.push(digest.value);
        };
        try {
          const layer = fileBlob('flushed after its 201');
          const digest = await c.pushBlob('up/later', layer);
          const record = await gw.registry.metadata.findBlob('up/later', digest);
          expect(record?.flushPending, 'the upload whose flush is pending').to.be.a('string');
          const body = await manifestNaming('up/later', [layer]);
          let answered = false;
          const put = c.putManifest('up/later', 'v1', body).then((res) => {
            answered = true;
            return res;
          });
          await new Promise((r) => setTimeout(r, 200));
          expect(answered, 'manifest answered before its layer was flushed').to.equal(false);
          expect(flushed).to.deep.equal([]);
          release();
          expect((await put).status).to.equal(201);
          expect(flushed).to.deep.equal([digest]);
          await gw.registry.blobFlushes.drain();
          expect((await gw.registry.metadata.findBlob('up/later', digest))?.flushPending).to.equal(null);
          expect(await (await c.request('GET', `/v2/up/later/blobs/${digest}`)).text()).to.equal(layer);
        } finally {
          release();
          store.flushContent = flush;
        }
      });

      it('forgets a blob whose bytes cannot be flushed: a manifest that names it is refused, and the blob can be pushed again', async () => {
        const store = gw.registry.store;
        const flush = store.flushContent;
        const layer = fileBlob('never flushed');
        let fail!: () => void;
        const failing = new Promise<void>((r) => (fail = r));
        store.flushContent = async () => {
          await failing;
          throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
        };
        let body: Buffer;
        try {
          expect(await c.pushBlob('up/lost', layer)).to.equal(sha256(layer));
          body = await manifestNaming('up/lost', [layer]);
          // The manifest waits for the flush, which fails.
          const put = c.putManifest('up/lost', 'v1', body);
          await new Promise((r) => setTimeout(r, 100));
          fail();
          const refused = await put;
          expect(refused.status).to.equal(400);
          const error = (await refused.json()) as { errors: Array<{ code: string; message: string }> };
          expect(error.errors[0].code).to.equal('MANIFEST_BLOB_UNKNOWN');
          expect(error.errors[0].message).to.contain('could not be written to disk');
        } finally {
          fail();
          store.flushContent = flush;
        }
        expect((await c.request('HEAD', `/v2/up/lost/blobs/${sha256(layer)}`)).status).to.equal(404);
        expect(await gw.registry.metadata.getBlob(sha256(layer))).to.equal(null);
        // As a client's retry does: HEAD said missing, so the blob is sent again.
        await c.pushBlob('up/lost', layer);
        expect((await c.putManifest('up/lost', 'v1', body)).status).to.equal(201);
        expect(await (await c.request('GET', `/v2/up/lost/blobs/${sha256(layer)}`)).text()).to.equal(layer);
      });

      it('hashes again at start-up the blobs whose flush was pending: whole ones are kept, cut ones forgotten', async () => {
        const whole = fileBlob('whole after a crash');
        const cut = fileBlob('cut by a crash');
        const [wholeDigest, cutDigest] = [await c.pushBlob('up/crash', whole), await c.pushBlob('up/crash', cut)];
        await gw.registry.blobFlushes.drain();
        // The state a crash leaves: records whose flush was pending, one file whose bytes did not all reach the disk.
        for (const digest of [wholeDigest, cutDigest]) {
          await gw.db.query('UPDATE blobs SET flush_pending = $2 WHERE digest = $1', [digest, 'crashed-upload']);
        }
        const cutFile = path.join(gw.root, 'staging', 'sha256', cutDigest.slice(7, 9), cutDigest.slice(7));
        writeFileSync(cutFile, Buffer.alloc(Buffer.byteLength(cut)));
        expect(await gw.registry.blobFlushes.recover()).to.deep.equal({ kept: 1, forgotten: 1 });
        expect((await gw.registry.metadata.findBlob('up/crash', wholeDigest))?.flushPending).to.equal(null);
        expect(await (await c.request('GET', `/v2/up/crash/blobs/${wholeDigest}`)).text()).to.equal(whole);
        expect((await c.request('HEAD', `/v2/up/crash/blobs/${cutDigest}`)).status).to.equal(404);
        expect(existsSync(cutFile)).to.equal(false);
        expect(await gw.registry.blobFlushes.recover()).to.deep.equal({ kept: 0, forgotten: 0 });
        // Sent again, it is whole.
        await c.pushBlob('up/crash', cut);
        expect(await (await c.request('GET', `/v2/up/crash/blobs/${cutDigest}`)).text()).to.equal(cut);
      });

      it('replaces a file a crash left under a digest no record names, rather than keep it', async () => {
        const layer = fileBlob('an orphan left by a crash');
        const digest = sha256(layer);
        const orphan = path.join(gw.root, 'staging', 'sha256', digest.slice(7, 9), digest.slice(7));
        writeFileSync(orphan, Buffer.alloc(Buffer.byteLength(layer)));
        await c.pushBlob('up/orphan', layer);
        expect(await (await c.request('GET', `/v2/up/orphan/blobs/${digest}`)).text()).to.equal(layer);
      });

      it('closes the connection after refusing a body it stopped reading (a write that hit a full disk)', async () => {
        const store = gw.registry.store;
        const open = store.openUploadWriter;
        const { Writable } = await import('node:stream');
        store.openUploadWriter = async () =>
          new Writable({ write: (_chunk, _enc, done) => done(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })) });
        const start = await c.request('POST', '/v2/up/midway/blobs/uploads/');
        const location = start.headers.get('location')!;
        try {
          // The client sends part of its body and waits: the answer must come, and then the end of the connection.
          const { status, connection, closed } = await new Promise<{ status: number; connection?: string; closed: Promise<void> }>((resolve, reject) => {
            const req = http.request(new URL(location, gw.url), { method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream' } });
            req.on('response', (res) => {
              res.resume();
              const closed = new Promise<void>((done) => req.socket!.once('close', () => done()));
              resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, closed });
            });
            req.on('error', reject);
            req.write(Buffer.alloc(256 * 1024, 3));
          });
          expect(status).to.equal(507);
          expect(connection).to.equal('close');
          const timeout = new Promise<string>((r) => setTimeout(() => r('still open'), 3000));
          expect(await Promise.race([closed.then(() => 'closed'), timeout])).to.equal('closed');
        } finally {
          store.openUploadWriter = open;
        }
        expect((await c.request('GET', location)).headers.get('range')).to.equal('0-0');
      });

      it('cancels an upload and forgets it', async () => {
        const start = await c.request('POST', '/v2/up/cancel/blobs/uploads/');
        const location = start.headers.get('location')!;
        expect((await c.request('DELETE', location)).status).to.equal(204);
        const res = await c.request('GET', location);
        expect(res.status).to.equal(404);
        expect(await errorCode(res)).to.equal('BLOB_UPLOAD_UNKNOWN');
      });

      it('does not let one repository use another repository\'s upload session', async () => {
        const start = await c.request('POST', '/v2/up/owner/blobs/uploads/');
        const id = start.headers.get('docker-upload-uuid');
        const res = await c.request('PATCH', `/v2/up/intruder/blobs/uploads/${id}`, { body: 'x' });
        expect(res.status).to.equal(404);
        expect(await errorCode(res)).to.equal('BLOB_UPLOAD_UNKNOWN');
      });

      it('mounts a blob from another repository, and falls back to an upload when it cannot', async () => {
        const digest = await c.pushBlob('up/source', 'mount me');
        const mount = await c.request('POST', `/v2/up/target/blobs/uploads/?mount=${digest}&from=up/source`);
        expect(mount.status).to.equal(201);
        expect(mount.headers.get('docker-content-digest')).to.equal(digest);
        expect(await (await c.request('GET', `/v2/up/target/blobs/${digest}`)).text()).to.equal('mount me');
        const fallback = await c.request('POST', `/v2/up/target/blobs/uploads/?mount=${sha256('absent')}&from=up/source`);
        expect(fallback.status).to.equal(202);
        expect(fallback.headers.get('location')).to.match(/\/v2\/up\/target\/blobs\/uploads\//);
      });

      it('keeps blobs scoped to their repository', async () => {
        const digest = await c.pushBlob('up/private', 'scoped');
        const res = await c.request('GET', `/v2/up/elsewhere/blobs/${digest}`);
        expect(res.status).to.equal(404);
        expect(await errorCode(res)).to.equal('BLOB_UNKNOWN');
      });

      it('serves ranges with 206 and answers unsatisfiable ranges with a well-formed 416', async () => {
        const digest = await c.pushBlob('up/range', '0123456789');
        const part = await c.request('GET', `/v2/up/range/blobs/${digest}`, { headers: { Range: 'bytes=2-4' } });
        expect(part.status).to.equal(206);
        expect(part.headers.get('content-range')).to.equal('bytes 2-4/10');
        expect(await part.text()).to.equal('234');
        const suffix = await c.request('GET', `/v2/up/range/blobs/${digest}`, { headers: { Range: 'bytes=-3' } });
        expect(await suffix.text()).to.equal('789');
        for (const range of ['bytes=50-60', 'bytes=5-2', 'bytes=50-60,70-80', 'bytes=abc']) {
          const res = await c.request('GET', `/v2/up/range/blobs/${digest}`, { headers: { Range: range } });
          expect(res.status, range).to.equal(416);
          expect(res.headers.get('content-range')).to.equal('bytes */10');
          expect(await errorCode(res)).to.equal('RANGE_INVALID');
        }
      });

      it('ignores a Range it does not serve (another unit, several ranges, on HEAD) and sends the whole blob (RFC 9110 §14.2)', async () => {
        const digest = await c.pushBlob('up/range-ignored', '0123456789');
        for (const range of ['items=1-2', 'bytes=0-0,5-9']) {
          const res = await c.request('GET', `/v2/up/range-ignored/blobs/${digest}`, { headers: { Range: range } });
          expect(res.status, range).to.equal(200);
          expect(res.headers.get('content-range'), range).to.equal(null);
          expect(await res.text(), range).to.equal('0123456789');
        }
        const head = await c.request('HEAD', `/v2/up/range-ignored/blobs/${digest}`, { headers: { Range: 'bytes=2-4' } });
        expect(head.status).to.equal(200);
        expect(head.headers.get('content-length')).to.equal('10');
        expect(head.headers.get('content-range')).to.equal(null);
      });

      it('deletes a blob from a repository', async () => {
        const digest = await c.pushBlob('up/del', 'delete me');
        expect((await c.request('DELETE', `/v2/up/del/blobs/${digest}`)).status).to.equal(202);
        expect((await c.request('HEAD', `/v2/up/del/blobs/${digest}`)).status).to.equal(404);
        expect((await c.request('DELETE', `/v2/up/del/blobs/${digest}`)).status).to.equal(404);
      });

      it('purges upload sessions abandoned for longer than the configured age', async () => {
        const start = await c.request('POST', '/v2/up/stale/blobs/uploads/');
        const location = start.headers.get('location')!;
        const id = start.headers.get('docker-upload-uuid')!;
        await c.request('PATCH', location, { body: 'partial' });
        expect(existsSync(path.join(gw.root, 'uploads', id))).to.equal(true);
        expect(await gw.registry.purgeStaleUploads(new Date(Date.now() + 1000))).to.be.greaterThan(0);
        expect((await c.request('GET', location)).status).to.equal(404);
        expect(existsSync(path.join(gw.root, 'uploads', id))).to.equal(false);
      });

      it('purges upload files whose session record is gone', async () => {
        const orphan = '00000000-0000-4000-8000-000000000000';
        writeFileSync(path.join(gw.root, 'uploads', orphan), 'left by a crash');
        await gw.registry.purgeStaleUploads(new Date(Date.now() + 1000));
        expect(existsSync(path.join(gw.root, 'uploads', orphan))).to.equal(false);
      });
    });

    describe('with storage.blobFlush=upload: bytes flushed before the 201', () => {
      let gwUpload: TestGateway;
      let cu: OciClient;

      before(async () => {
        gwUpload = await startTestGateway(kind, { config: (cfg) => void (cfg.storage.blobFlush = 'upload') });
        cu = new OciClient(gwUpload.url);
      });
      after(async () => gwUpload.stop());

      /** Ends a new upload of `content` to `repo` with a PUT while flushing its bytes fails with `code`. */
      async function putWhileFlushFails(repo: string, content: string, code: string): Promise<{ put: Response; location: string }> {
        const store = gwUpload.registry.store;
        const flush = store.syncUpload;
        store.syncUpload = async () => {
          throw Object.assign(new Error(`${code}: fdatasync`), { code });
        };
        const start = await cu.request('POST', `/v2/up/${repo}/blobs/uploads/`);
        const location = start.headers.get('location')!;
        try {
          return { put: await cu.request('PUT', `${location}?digest=${sha256(content)}`, { body: content }), location };
        } finally {
          store.syncUpload = flush;
        }
      }

      it('answers 500 when the bytes cannot be flushed to disk, stores nothing, and keeps the upload for a retry', async () => {
        const content = fileBlob('unsynced');
        const { put, location } = await putWhileFlushFails('unsynced', content, 'EIO');
        expect(put.status).to.equal(500);
        expect((await cu.request('HEAD', `/v2/up/unsynced/blobs/${sha256(content)}`)).status).to.equal(404);
        expect((await cu.request('GET', location)).headers.get('range')).to.equal(`0-${content.length - 1}`);
        const retry = await cu.request('PUT', `${location}?digest=${sha256(content)}`);
        expect(retry.status).to.equal(201);
        expect(await (await cu.request('GET', `/v2/up/unsynced/blobs/${sha256(content)}`)).text()).to.equal(content);
      });

      it('answers 507 when storage is full, stores nothing, and keeps the upload for a retry', async () => {
        const content = fileBlob('full');
        const { put, location } = await putWhileFlushFails('full', content, 'ENOSPC');
        expect(put.status).to.equal(507);
        const body = (await put.json()) as { errors: Array<{ code: string; message: string }> };
        expect(body.errors[0].code).to.equal('UNKNOWN');
        expect(body.errors[0].message).to.contain('out of storage space');
        expect((await cu.request('HEAD', `/v2/up/full/blobs/${sha256(content)}`)).status).to.equal(404);
        expect((await cu.request('PUT', `${location}?digest=${sha256(content)}`)).status).to.equal(201);
      });

      it('stores a small blob without flushing a file: the database commit makes it durable', async () => {
        const { put } = await putWhileFlushFails('noflush', 'a small blob', 'EIO');
        expect(put.status).to.equal(201);
        expect(await (await cu.request('GET', `/v2/up/noflush/blobs/${sha256('a small blob')}`)).text()).to.equal('a small blob');
      });

      // A PostgreSQL server's commits are durable when they return; the embedded database flushes its log first.
      if (kind === 'pglite') it("answers an upload's closing PUT once its commit is on disk", async () => {
        const wal = (gwUpload.db as unknown as { wal: { syncs: number } }).wal;
        const start = await cu.request('POST', '/v2/m/durable/blobs/uploads/');
        const before = wal.syncs;
        expect((await cu.request('PATCH', start.headers.get('location')!, { body: 'progress' })).status).to.equal(202);
        expect(wal.syncs).to.equal(before);
        expect((await cu.request('PUT', `${start.headers.get('location')}?digest=${sha256('progress')}`)).status).to.equal(201);
        expect(wal.syncs).to.be.greaterThan(before);
      });
    });

    describe('blob size limit', () => {
      let limited: TestGateway;
      before(async () => {
        limited = await startTestGateway(kind, { config: (cfg) => void (cfg.limits.maxBlobBytes = 256 * 1024) });
      });
      after(async () => limited.stop());

      it('refuses a declared body above the limit with 413 SIZE_INVALID', async () => {
        const lc = new OciClient(limited.url);
        const big = Buffer.alloc(300 * 1024, 7);
        const res = await lc.request('POST', `/v2/lim/declared/blobs/uploads/?digest=${sha256(big)}`, { body: big });
        expect(res.status).to.equal(413);
        expect(await errorCode(res)).to.equal('SIZE_INVALID');
      });

      it('holds a small blob, kept in the database, to the limit too', async () => {
        const tiny = await startTestGateway(kind, { config: (cfg) => void (cfg.limits.maxBlobBytes = 1024) });
        try {
          const tc = new OciClient(tiny.url);
          const over = Buffer.alloc(1025, 7);
          const res = await tc.request('POST', `/v2/lim/tiny/blobs/uploads/?digest=${sha256(over)}`, { body: over });
          expect(res.status).to.equal(413);
          expect(await errorCode(res)).to.equal('SIZE_INVALID');
          expect(await tc.pushBlob('lim/tiny', over.subarray(1))).to.equal(sha256(over.subarray(1)));
        } finally {
          await tiny.stop();
        }
      });

      it('stops a streamed PATCH at the limit, keeps serving and keeps the upload where it was', async () => {
        const lc = new OciClient(limited.url);
        const start = await lc.request('POST', '/v2/lim/streamed/blobs/uploads/');
        const location = start.headers.get('location')!;
        // No Content-Length: the gateway learns the size only while reading, and cuts the request there.
        const outcome = await new Promise<string>((resolve) => {
          const req = http.request(new URL(location, limited.url), { method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream' } });
          req.on('response', (res) => {
            res.resume();
            resolve(String(res.statusCode));
          });
          req.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
          const chunk = Buffer.alloc(64 * 1024, 1);
          let sent = 0;
          const more = () => {
            while (sent < 2 * 1024 * 1024) {
              sent += chunk.length;
              if (!req.write(chunk)) return void req.once('drain', more);
            }
            req.end();
          };
          more();
        });
        expect(outcome).to.be.oneOf(['413', 'EPIPE', 'ECONNRESET']);
        // The cut connection's response finished without a socket: the gateway lives on.
        await new Promise((r) => setTimeout(r, 100));
        expect((await lc.request('GET', '/v2/')).status).to.equal(200);
        const status = await lc.request('GET', location);
        expect(status.status).to.equal(204);
        expect(status.headers.get('range')).to.equal('0-0');
      });
    });

    describe('manifests', () => {
      it('stores the exact bytes and serves them by tag and digest with type, digest and ETag', async () => {
        const { digest, body, res } = await c.pushImage('m/app', 'v1');
        expect(res.headers.get('location')).to.equal(`/v2/m/app/manifests/${digest}`);
        expect(res.headers.get('docker-content-digest')).to.equal(digest);
        for (const ref of ['v1', digest]) {
          const get = await c.request('GET', `/v2/m/app/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
          expect(get.status).to.equal(200);
          expect(get.headers.get('content-type')).to.equal(OCI_MANIFEST);
          expect(get.headers.get('docker-content-digest')).to.equal(digest);
          expect(get.headers.get('etag')).to.equal(`"${digest}"`);
          expect(Buffer.from(await get.arrayBuffer()).equals(body)).to.equal(true);
        }
        const head = await c.request('HEAD', '/v2/m/app/manifests/v1');
        expect(head.headers.get('content-length')).to.equal(String(body.length));
      });

      it('keeps whitespace and key order of pushed manifests (never re-serialises)', async () => {
        const config = await c.pushBlob('m/raw', '{}');
        const body = Buffer.from(`{\n  "schemaVersion": 2,\n  "mediaType": "${OCI_MANIFEST}",\n  "layers": [],\n  "config": {"size": 2, "digest": "${config}", "mediaType": "application/vnd.oci.empty.v1+json"},\n  "artifactType": "x/y"\n}\n`);
        expect((await c.putManifest('m/raw', 'pretty', body)).status).to.equal(201);
        const get = await c.request('GET', '/v2/m/raw/manifests/pretty');
        expect(Buffer.from(await get.arrayBuffer()).equals(body)).to.equal(true);
      });

      it('refuses a manifest holding a NUL character (which PostgreSQL cannot store) with 400, storing nothing', async () => {
        const { body } = await c.pushImage('m/nulmanifest', 'seed');
        const doc = JSON.parse(body.toString()) as Record<string, unknown>;
        for (const annotations of [{ 'org.example': 'a\u0000b' }, { 'org.example\u0000': 'b' }]) {
          const bad = Buffer.from(JSON.stringify({ ...doc, annotations }));
          const res = await c.putManifest('m/nulmanifest', 'bad', bad);
          expect(res.status).to.equal(400);
          expect(await errorCode(res)).to.equal('MANIFEST_INVALID');
          expect((await c.request('GET', `/v2/m/nulmanifest/manifests/${sha256(bad)}`)).status).to.equal(404);
        }
        expect((await c.request('GET', '/v2/m/nulmanifest/manifests/bad')).status).to.equal(404);
      });

      it('refuses manifests that reference content the repository does not have', async () => {
        const body = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256('missing config'), size: 14 },
          layers: [],
        }));
        const res = await c.putManifest('m/missing', 'v1', body);
        expect(res.status).to.equal(400);
        const json = (await res.json()) as { errors: Array<{ code: string; detail: { missing: string[] } }> };
        expect(json.errors[0].code).to.equal('MANIFEST_BLOB_UNKNOWN');
        expect(json.errors[0].detail.missing).to.deep.equal([sha256('missing config')]);
      });

      it('refuses a manifest pushed by a digest it does not have', async () => {
        const { body } = await c.pushImage('m/bydigest', 'seed');
        const res = await c.putManifest('m/bydigest', sha256('something else'), body);
        expect(res.status).to.equal(400);
        expect(await errorCode(res)).to.equal('DIGEST_INVALID');
      });

      it('accepts a manifest pushed by sha512 digest', async () => {
        const { body } = await c.pushImage('m/s512', 'seed');
        const res = await c.putManifest('m/s512', sha512(body), body);
        expect(res.status).to.equal(201);
        expect(res.headers.get('docker-content-digest')).to.equal(sha512(body));
        expect((await c.request('HEAD', `/v2/m/s512/manifests/${sha512(body)}`)).status).to.equal(200);
      });

      it('refuses invalid manifests with MANIFEST_INVALID and oversize ones with 413', async () => {
        const invalid = await c.putManifest('m/invalid', 'v1', Buffer.from('{"schemaVersion":2'));
        expect(invalid.status).to.equal(400);
        expect(await errorCode(invalid)).to.equal('MANIFEST_INVALID');
        const huge = await c.putManifest('m/invalid', 'v1', Buffer.alloc(65 * 1024, 0x20));
        expect(huge.status).to.equal(413);
        expect(await errorCode(huge)).to.equal('SIZE_INVALID');
        const badTag = await c.putManifest('m/invalid', '.bad', Buffer.from('{}'));
        expect(badTag.status).to.equal(400);
      });

      it('auto-provides the well-known empty config blob for artifacts', async () => {
        const body = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example',
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 },
          layers: [],
        }));
        expect((await c.putManifest('m/artifact', 'v1', body)).status).to.equal(201);
        expect(await (await c.request('GET', `/v2/m/artifact/blobs/${sha256('{}')}`)).text()).to.equal('{}');
      });

      it('tags a digest push with ?tag= and echoes OCI-Tag', async () => {
        const { body, digest } = await c.pushImage('m/tags', 'seed');
        const res = await c.request('PUT', `/v2/m/tags/manifests/${digest}?tag=a&tag=b`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
        expect(res.status).to.equal(201);
        expect(res.headers.get('oci-tag')).to.equal('a, b');
        expect((await c.request('HEAD', '/v2/m/tags/manifests/b')).headers.get('docker-content-digest')).to.equal(digest);
      });

      it('takes a tag named twice (in the path and as ?tag=, or twice as ?tag=) as one tag', async () => {
        const { body, digest } = await c.pushImage('m/twice', 'seed');
        const twice = await c.request('PUT', `/v2/m/twice/manifests/${digest}?tag=x&tag=x`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
        expect(twice.status).to.equal(201);
        expect(twice.headers.get('oci-tag')).to.equal('x');
        const both = await c.request('PUT', '/v2/m/twice/manifests/y?tag=y&tag=z', { body, headers: { 'Content-Type': OCI_MANIFEST } });
        expect(both.status).to.equal(201);
        expect(both.headers.get('oci-tag')).to.equal('y, z');
        const listed = (await (await c.request('GET', '/v2/m/twice/tags/list')).json()) as { tags: string[] };
        expect(listed.tags).to.deep.equal(['seed', 'x', 'y', 'z']);
      });

      it('honours If-Match on manifest PUT (412 on mismatch) and If-None-Match on GET (304)', async () => {
        const first = await c.pushImage('m/cond', 'latest');
        const second = await c.pushImage('m/cond', 'other');
        const stale = await c.putManifest('m/cond', 'latest', second.body, OCI_MANIFEST, { 'If-Match': '"sha256:' + 'f'.repeat(64) + '"' });
        expect(stale.status).to.equal(412);
        const ok = await c.putManifest('m/cond', 'latest', second.body, OCI_MANIFEST, { 'If-Match': `"${first.digest}"` });
        expect(ok.status).to.equal(201);
        const create = await c.putManifest('m/cond', 'latest', first.body, OCI_MANIFEST, { 'If-None-Match': '*' });
        expect(create.status).to.equal(412);
        const cached = await c.request('GET', '/v2/m/cond/manifests/latest', { headers: { 'If-None-Match': `"${second.digest}"` } });
        expect(cached.status).to.equal(304);
      });

      it('compares If-Match strongly and If-None-Match weakly, on GET and HEAD (RFC 9110 §13.1)', async () => {
        const first = await c.pushImage('m/etag', 'latest');
        const second = await c.pushImage('m/etag', 'other');
        const weak = await c.putManifest('m/etag', 'latest', second.body, OCI_MANIFEST, { 'If-Match': `W/"${first.digest}"` });
        expect(weak.status).to.equal(412);
        for (const method of ['GET', 'HEAD']) {
          for (const tag of [`W/"${first.digest}"`, `"${first.digest}"`, '*', `"sha256:${'f'.repeat(64)}", "${first.digest}"`]) {
            const res = await c.request(method, '/v2/m/etag/manifests/latest', { headers: { 'If-None-Match': tag } });
            expect(res.status, `${method} ${tag}`).to.equal(304);
            expect(res.headers.get('etag'), `${method} ${tag}`).to.equal(`"${first.digest}"`);
          }
          const changed = await c.request(method, '/v2/m/etag/manifests/latest', { headers: { 'If-None-Match': `"${second.digest}"` } });
          expect(changed.status, method).to.equal(200);
        }
      });

      it('lets only one of concurrent PUTs with the same If-Match (or If-None-Match: *) through: no lost update', async () => {
        const base = await c.pushImage('m/race', 'seed');
        const variant = (n: string) => Buffer.from(JSON.stringify({ ...JSON.parse(base.body.toString()), annotations: { n } }));
        await c.putManifest('m/race', 'current', base.body);
        const etag = `"${base.digest}"`;
        const updates = await Promise.all(
          [...Array(8).keys()].map((k) => c.putManifest('m/race', 'current', variant(`update ${k}`), OCI_MANIFEST, { 'If-Match': etag })),
        );
        expect(updates.map((r) => r.status).sort()).to.deep.equal([201, 412, 412, 412, 412, 412, 412, 412]);
        const winner = updates.find((r) => r.status === 201)!.headers.get('docker-content-digest');
        expect((await c.request('HEAD', '/v2/m/race/manifests/current')).headers.get('docker-content-digest')).to.equal(winner);
        const creates = await Promise.all(
          [...Array(8).keys()].map((k) => c.putManifest('m/race', 'fresh', variant(`create ${k}`), OCI_MANIFEST, { 'If-None-Match': '*' })),
        );
        expect(creates.map((r) => r.status).sort()).to.deep.equal([201, 412, 412, 412, 412, 412, 412, 412]);
      });

      // A PostgreSQL server's commits are durable when they return; the embedded database flushes its log first.
      if (kind === 'pglite') it('answers a write only once its commits are on disk', async () => {
        const wal = (gw.db as unknown as { wal: { syncs: number } }).wal;
        const before = wal.syncs;
        await c.pushImage('m/durable', 'v1');
        // The manifest's answer waits for a flush that covers its blobs' commits too; none is left for reads.
        expect(wal.syncs - before).to.be.at.least(1);
        const afterPush = wal.syncs;
        expect((await c.request('GET', '/v2/m/durable/manifests/v1')).status).to.equal(200);
        expect(wal.syncs).to.equal(afterPush);
        // An upload session's progress is answered without a flush, and so is the PUT that closes it
        // (storage.blobFlush=manifest): a manifest that names the blob waits for one.
        const start = await c.request('POST', '/v2/m/durable/blobs/uploads/');
        expect((await c.request('PATCH', start.headers.get('location')!, { body: 'progress' })).status).to.equal(202);
        expect((await c.request('PUT', `${start.headers.get('location')}?digest=${sha256('progress')}`)).status).to.equal(201);
        expect(wal.syncs).to.equal(afterPush);
        await c.pushImage('m/durable', 'v2', { layers: ['progress'] });
        expect(wal.syncs).to.be.greaterThan(afterPush);
      });

      it('answers DELETE with 405 and an Allow header while deletion is disabled', async () => {
        const { digest, manifest: image } = await c.pushImage('m/nodelete', 'v1');
        const configDigest = image.config.digest;
        const limits = gw.registry.limits as { deleteEnabled: boolean };
        limits.deleteEnabled = false;
        try {
          const manifest = await c.request('DELETE', `/v2/m/nodelete/manifests/${digest}`);
          expect(manifest.status).to.equal(405);
          expect(manifest.headers.get('allow')).to.equal('GET, HEAD, PUT');
          expect(await errorCode(manifest)).to.equal('UNSUPPORTED');
          const blob = await c.request('DELETE', `/v2/m/nodelete/blobs/${configDigest}`);
          expect(blob.status).to.equal(405);
          expect(blob.headers.get('allow')).to.equal('GET, HEAD');
        } finally {
          limits.deleteEnabled = true;
        }
        expect((await c.request('HEAD', `/v2/m/nodelete/manifests/v1`)).status).to.equal(200);
      });

      it('deletes by tag (tag only) and by digest (manifest and all its tags)', async () => {
        const { digest } = await c.pushImage('m/del', 'one');
        await c.request('PUT', `/v2/m/del/manifests/two`, {
          body: (await (await c.request('GET', `/v2/m/del/manifests/${digest}`)).arrayBuffer()) as unknown as Buffer,
          headers: { 'Content-Type': OCI_MANIFEST },
        });
        expect((await c.request('DELETE', '/v2/m/del/manifests/one')).status).to.equal(202);
        expect((await c.request('GET', '/v2/m/del/manifests/one')).status).to.equal(404);
        expect((await c.request('GET', '/v2/m/del/manifests/two')).status).to.equal(200);
        expect((await c.request('DELETE', `/v2/m/del/manifests/${digest}`)).status).to.equal(202);
        const gone = await c.request('GET', '/v2/m/del/manifests/two');
        expect(gone.status).to.equal(404);
        expect(await errorCode(gone)).to.equal('MANIFEST_UNKNOWN');
      });

      it('accepts an index whose children are present and refuses one whose children are not', async () => {
        const amd = await c.pushImage('m/multi', 'amd64');
        const arm = await c.pushImage('m/multi', 'arm64');
        const index = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_INDEX,
          manifests: [
            { mediaType: OCI_MANIFEST, digest: amd.digest, size: amd.body.length, platform: { os: 'linux', architecture: 'amd64' } },
            { mediaType: OCI_MANIFEST, digest: arm.digest, size: arm.body.length, platform: { os: 'linux', architecture: 'arm64' } },
          ],
        }));
        expect((await c.putManifest('m/multi', 'latest', index, OCI_INDEX)).status).to.equal(201);
        const orphan = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('nope'), size: 4 }] }));
        const res = await c.putManifest('m/multi', 'orphan', orphan, OCI_INDEX);
        expect(res.status).to.equal(400);
        expect(await errorCode(res)).to.equal('MANIFEST_BLOB_UNKNOWN');
      });
    });

    describe('referrers', () => {
      it('answers OCI-Subject, lists referrers with artifactType and annotations, and filters', async () => {
        const subject = await c.pushImage('r/app', 'v1');
        const refBody = (artifactType: string, note: string) => Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType,
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 },
          layers: [],
          subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.body.length },
          annotations: { note },
        }));
        const sig = refBody('application/vnd.example.sig', 'signature');
        const sbom = refBody('application/spdx+json', 'sbom');
        for (const body of [sig, sbom]) {
          const res = await c.putManifest('r/app', sha256(body), body);
          expect(res.status).to.equal(201);
          expect(res.headers.get('oci-subject')).to.equal(subject.digest);
        }
        const all = await c.request('GET', `/v2/r/app/referrers/${subject.digest}`);
        expect(all.status).to.equal(200);
        expect(all.headers.get('content-type')).to.equal(OCI_INDEX);
        expect(all.headers.get('oci-filters-applied')).to.equal(null);
        const index = (await all.json()) as { manifests: Array<{ digest: string; artifactType: string; annotations: Record<string, string> }> };
        expect(index.manifests.map((m) => m.digest).sort()).to.deep.equal([sha256(sig), sha256(sbom)].sort());
        expect(index.manifests.find((m) => m.digest === sha256(sbom))).to.deep.include({ artifactType: 'application/spdx+json', annotations: { note: 'sbom' } });
        const filtered = await c.request('GET', `/v2/r/app/referrers/${subject.digest}?artifactType=application/spdx%2Bjson`);
        expect(filtered.headers.get('oci-filters-applied')).to.equal('artifactType');
        expect(((await filtered.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest)).to.deep.equal([sha256(sbom)]);
        // An empty artifactType filters nothing, and the response does not claim it did.
        const empty = await c.request('GET', `/v2/r/app/referrers/${subject.digest}?artifactType=`);
        expect(empty.headers.get('oci-filters-applied')).to.equal(null);
        expect(((await empty.json()) as { manifests: unknown[] }).manifests).to.have.length(2);
      });

      it('accepts a referrer before its subject exists', async () => {
        const body = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example',
          config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 },
          layers: [], subject: { mediaType: OCI_MANIFEST, digest: sha256('future image'), size: 12 },
        }));
        const res = await c.putManifest('r/early', 'x', body);
        expect(res.status).to.equal(201);
        expect(res.headers.get('oci-subject')).to.equal(sha256('future image'));
        const list = (await (await c.request('GET', `/v2/r/early/referrers/${sha256('future image')}`)).json()) as { manifests: unknown[] };
        expect(list.manifests).to.have.length(1);
      });

      it('answers unknown digests and unknown repositories with 200 and an empty index', async () => {
        for (const p of [`/v2/r/app/referrers/${ZERO}`, `/v2/never/pushed/referrers/${ZERO}`]) {
          const res = await c.request('GET', p);
          expect(res.status).to.equal(200);
          expect(res.headers.get('content-type')).to.equal(OCI_INDEX);
          expect(await res.json()).to.deep.equal({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
        }
      });

      it('merges manifests a client listed in the sha256-<hex> fallback index, reading each from our records', async () => {
        const subject = await c.pushImage('r/fallback', 'v1');
        // An artifact without `subject` (some older tools), listed only in the fallback index.
        const artifact = await c.pushImage('r/fallback', 'att', { extra: { artifactType: 'application/vnd.legacy' } });
        const listedButAbsent = sha256('not in repository');
        const fallback = Buffer.from(JSON.stringify({
          schemaVersion: 2, mediaType: OCI_INDEX,
          manifests: [
            { mediaType: OCI_MANIFEST, digest: artifact.digest, size: artifact.body.length, artifactType: 'application/vnd.oci.empty.v1+json' },
            { mediaType: OCI_MANIFEST, digest: listedButAbsent, size: 10 },
          ],
        }));
        // The fallback index names content that is absent, so it cannot be pushed as an index; clients
        // push it anyway only when entries exist. Push with the present entry only:
        const present = Buffer.from(JSON.stringify({ ...JSON.parse(fallback.toString()), manifests: [JSON.parse(fallback.toString()).manifests[0]] }));
        expect((await c.putManifest('r/fallback', `sha256-${subject.digest.slice(7)}`, present, OCI_INDEX)).status).to.equal(201);
        const list = (await (await c.request('GET', `/v2/r/fallback/referrers/${subject.digest}`)).json()) as { manifests: Array<{ digest: string; artifactType: string }> };
        expect(list.manifests).to.deep.equal([
          { mediaType: OCI_MANIFEST, digest: artifact.digest, size: artifact.body.length, artifactType: 'application/vnd.legacy' },
        ]);
      });
    });

    describe('listing', () => {
      it('lists tags in order and paginates with n, last and Link', async () => {
        const { body } = await c.pushImage('l/tags', 't0');
        for (const tag of ['t3', 't1', 't2', 'T9']) {
          expect((await c.putManifest('l/tags', tag, body)).status).to.equal(201);
        }
        const all = await c.request('GET', '/v2/l/tags/tags/list');
        expect(await all.json()).to.deep.equal({ name: 'l/tags', tags: ['T9', 't0', 't1', 't2', 't3'] });
        const page = await c.request('GET', '/v2/l/tags/tags/list?n=2');
        expect(((await page.json()) as { tags: string[] }).tags).to.deep.equal(['T9', 't0']);
        const link = page.headers.get('link')!;
        expect(link).to.equal('</v2/l/tags/tags/list?n=2&last=t0>; rel="next"');
        const next = await c.request('GET', link.slice(1, link.indexOf('>')));
        expect(((await next.json()) as { tags: string[] }).tags).to.deep.equal(['t1', 't2']);
        const tail = await c.request('GET', '/v2/l/tags/tags/list?n=2&last=t2');
        expect(((await tail.json()) as { tags: string[] }).tags).to.deep.equal(['t3']);
        expect(tail.headers.get('link')).to.equal(null);
        const zero = await c.request('GET', '/v2/l/tags/tags/list?n=0');
        expect(((await zero.json()) as { tags: string[] }).tags).to.deep.equal([]);
        expect(zero.headers.get('link')).to.equal(null);
        const bad = await c.request('GET', '/v2/l/tags/tags/list?n=-1');
        expect(bad.status).to.equal(400);
        expect(await errorCode(bad)).to.equal('PAGINATION_NUMBER_INVALID');
        const huge = await c.request('GET', '/v2/l/tags/tags/list?n=10000000000');
        expect(huge.status).to.equal(400);
        const tooMany = (await huge.json()) as { errors: Array<{ code: string; message: string }> };
        expect(tooMany.errors[0].code).to.equal('PAGINATION_NUMBER_INVALID');
        expect(tooMany.errors[0].message).to.contain('from 0 to 999999999');
      });

      it('answers tag listing of an unknown repository with 404 NAME_UNKNOWN', async () => {
        const res = await c.request('GET', '/v2/l/nothing/tags/list');
        expect(res.status).to.equal(404);
        expect(await errorCode(res)).to.equal('NAME_UNKNOWN');
      });

      it('paginates the catalog', async () => {
        await c.pushImage('l/cat-a', 'v1');
        await c.pushImage('l/cat-b', 'v1');
        const first = await c.request('GET', '/v2/_catalog?n=1&last=l/cat');
        expect(await first.json()).to.deep.equal({ repositories: ['l/cat-a'] });
        expect(first.headers.get('link')).to.equal('</v2/_catalog?n=1&last=l%2Fcat-a>; rel="next"');
      });
    });

    describe('observability', () => {
      it('reports health, readiness and request metrics', async () => {
        await c.pushImage('obs/app', 'v1', { layers: [fileBlob('a layer moved by the commit')] });
        expect((await c.request('GET', '/healthz')).status).to.equal(200);
        expect((await c.request('GET', '/readyz')).status).to.equal(200);
        const metrics = await (await c.request('GET', '/metrics')).text();
        expect(metrics).to.match(/gateway_http_requests_total\{method="PUT",route="manifest",status="201"\} \d+/);
        expect(metrics).to.match(/gateway_storage_operations_total\{driver="filesystem",op="commit",result="ok"\} \d+/);
        expect(metrics).to.match(/gateway_http_received_bytes_total\{route="blob_upload"\} \d+/);
      });
    });
  });
}
