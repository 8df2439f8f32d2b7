/** `Expect: 100-continue`: the body is asked for only once a handler reads it. */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { TestGateway } from '../helpers/gateway.js';
import { startAuthGateway, userAuth } from '../helpers/auth.js';
import { SOCKET_INGEST_MIN_BYTES } from '../../src/storage/socket-ingest.js';

interface Outcome {
  status: number;
  /** The server said 100 Continue (and the body was sent then). */
  continued: boolean;
}

/** A request that holds its body back until the server answers 100 Continue, as curl does. */
function withExpect(url: string, method: string, headers: Record<string, string>, body: Buffer): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = http.request(url, { method, agent: false, headers: { ...headers, Expect: '100-continue', 'Content-Length': String(body.length) } });
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, continued });
        // Answered without 100: the body is never sent; the server closes the connection.
        if (!continued) req.destroy();
      });
    });
    req.on('error', (err) => {
      if (!continued && (err as NodeJS.ErrnoException).code === 'ECONNRESET') return;
      reject(err);
    });
  });
}

describe('Expect: 100-continue', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startAuthGateway('pglite');
  });
  after(async () => gw.stop());

  const blob = randomBytes(3 * 1024 * 1024);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const upload = () => `${gw.url}/v2/team/expect/blobs/uploads/?digest=${digest}`;

  it('answers a push without credentials with 401 and never asks for its body', async () => {
    const outcome = await withExpect(upload(), 'POST', { 'Content-Type': 'application/octet-stream' }, blob);
    expect(outcome).to.deep.equal({ status: 401, continued: false });
  });

  it('asks for the body of an authorised push, and stores it', async () => {
    const outcome = await withExpect(upload(), 'POST', { Authorization: userAuth('alice'), 'Content-Type': 'application/octet-stream' }, blob);
    expect(outcome).to.deep.equal({ status: 201, continued: true });
    const res = await fetch(`${gw.url}/v2/team/expect/blobs/${digest}`, { headers: { Authorization: userAuth('alice') } });
    expect(res.status).to.equal(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(blob)).to.equal(true);
  });

  it('asks for a large body that is read straight from the socket, and stores it', async () => {
    const large = randomBytes(SOCKET_INGEST_MIN_BYTES + 1);
    const largeDigest = `sha256:${createHash('sha256').update(large).digest('hex')}`;
    const outcome = await withExpect(
      `${gw.url}/v2/team/expect/blobs/uploads/?digest=${largeDigest}`,
      'POST',
      { Authorization: userAuth('alice'), 'Content-Type': 'application/octet-stream' },
      large,
    );
    expect(outcome).to.deep.equal({ status: 201, continued: true });
    const res = await fetch(`${gw.url}/v2/team/expect/blobs/${largeDigest}`, { headers: { Authorization: userAuth('alice') } });
    expect(Buffer.from(await res.arrayBuffer()).equals(large)).to.equal(true);
  });

  it('does not ask for a body the request ignores (POST that opens an upload session)', async () => {
    const outcome = await withExpect(`${gw.url}/v2/team/expect/blobs/uploads/`, 'POST', { Authorization: userAuth('alice') }, Buffer.from('ignored'));
    expect(outcome).to.deep.equal({ status: 202, continued: false });
  });

  it('refuses a chunk that does not start where the upload is (416) and never asks for it', async () => {
    const auth = { Authorization: userAuth('alice') };
    const started = await fetch(`${gw.url}/v2/team/expect/blobs/uploads/`, { method: 'POST', headers: auth });
    expect(started.status).to.equal(202);
    const location = new URL(started.headers.get('location') as string, gw.url).toString();
    const outcome = await withExpect(
      location,
      'PATCH',
      { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Range': `1000-${1000 + blob.length - 1}` },
      blob,
    );
    expect(outcome).to.deep.equal({ status: 416, continued: false });
    // The session is as it was: a chunk from 0 is taken.
    const chunk = blob.subarray(0, 1024);
    const patched = await fetch(location, {
      method: 'PATCH',
      headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Range': '0-1023' },
      body: chunk,
    });
    expect(patched.status).to.equal(202);
    expect(patched.headers.get('range')).to.equal('0-1023');
  });

  it('refuses a manifest declared over the size limit with 413 and never asks for it', async () => {
    const outcome = await withExpect(
      `${gw.url}/v2/team/expect/manifests/v1`,
      'PUT',
      { Authorization: userAuth('alice'), 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      Buffer.alloc(5 * 1024 * 1024, 0x20),
    );
    expect(outcome).to.deep.equal({ status: 413, continued: false });
  });

  it('refuses a push to a repository the user may not push to with 403 and never asks for its body', async () => {
    const outcome = await withExpect(
      `${gw.url}/v2/bob/expect/blobs/uploads/?digest=${digest}`,
      'POST',
      { Authorization: userAuth('alice'), 'Content-Type': 'application/octet-stream' },
      blob,
    );
    expect(outcome).to.deep.equal({ status: 403, continued: false });
  });
});
