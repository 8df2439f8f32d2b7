/** Shutdown: requests in progress finish within the grace period, new connections are refused, what is left is cut. */
import { expect } from 'chai';
import http from 'node:http';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** A PATCH whose body is written by the caller: its response, and the means to write and end the body. */
function streamedPatch(gw: TestGateway, location: string) {
  const url = new URL(location, gw.url);
  const req = http.request(url, { method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream' } });
  const response = new Promise<{ status: number; connection: string | undefined; location: string | undefined }>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, location: res.headers.location }));
    });
    req.on('error', reject);
  });
  return { req, response };
}

async function startUpload(gw: TestGateway): Promise<string> {
  const res = await fetch(`${gw.url}/v2/shutdown/test/blobs/uploads/`, { method: 'POST' });
  expect(res.status).to.equal(202);
  return res.headers.get('location')!;
}

const refused = async (url: string) => {
  try {
    await fetch(url, { headers: { Connection: 'close' } });
    return false;
  } catch (err) {
    return /ECONNREFUSED/.test(String((err as { cause?: unknown }).cause ?? err));
  }
};

describe('shutdown', () => {
  it('lets a request in progress finish, answers it with Connection: close and refuses new connections meanwhile', async () => {
    const gw = await startTestGateway('pglite', { config: (c) => (c.http.shutdownGraceSeconds = 20) });
    try {
      const patch = streamedPatch(gw, await startUpload(gw));
      patch.req.write(Buffer.alloc(64 * 1024, 1));
      await new Promise((r) => setTimeout(r, 200));
      const started = Date.now();
      const closing = gw.close();
      await new Promise((r) => setTimeout(r, 300));
      expect(await refused(`${gw.url}/readyz`)).to.equal(true);
      patch.req.end(Buffer.alloc(64 * 1024, 2));
      const res = await patch.response;
      expect(res.status).to.equal(202);
      expect(res.connection).to.equal('close');
      await closing;
      // Closed once the request was done, not at the end of the grace period.
      expect(Date.now() - started).to.be.below(5000);
    } finally {
      await gw.stop().catch(() => undefined);
    }
  }).timeout(30_000);

  it('cuts a request still in progress when the grace period ends', async () => {
    const gw = await startTestGateway('pglite', { config: (c) => (c.http.shutdownGraceSeconds = 1) });
    try {
      const patch = streamedPatch(gw, await startUpload(gw));
      patch.req.write(Buffer.alloc(1024, 1));
      await new Promise((r) => setTimeout(r, 200));
      const started = Date.now();
      await gw.close();
      const elapsed = Date.now() - started;
      expect(elapsed).to.be.at.least(900);
      expect(elapsed).to.be.below(5000);
      const outcome = await patch.response.then(
        () => 'answered',
        (err: Error) => err.message,
      );
      expect(outcome).to.match(/socket hang up|ECONNRESET/);
    } finally {
      await gw.stop().catch(() => undefined);
    }
  }).timeout(30_000);
});
