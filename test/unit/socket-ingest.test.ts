/** The socket-ingest addon on real TCP connections and real files. */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  canIngestSockets,
  ingestSocket,
  MAX_RUNNING_INGESTS,
  offerSocketBody,
  takeSocketBody,
  type SocketBody,
} from '../../src/storage/socket-ingest.js';

interface Connection {
  /** The accepted end, which Node does not read. */
  server: net.Socket;
  client: net.Socket;
  close(): void;
}

/** A loopback connection whose accepted end Node never reads (the addon does). */
async function connect(): Promise<Connection> {
  const listener = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  const server = await accepted;
  return {
    server,
    client,
    close() {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}

function bodyOf(server: net.Socket, length: number, prefix = Buffer.alloc(0), idleMs = 5000): SocketBody & { released: number } {
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    fd,
    prefix,
    length,
    idleMs,
    released: 0,
    onClose(listener) {
      server.once('close', listener);
      return () => server.off('close', listener);
    },
    release() {
      this.released++;
    },
  };
}

const hex = (algorithm: string, data: Buffer) => createHash(algorithm).update(data).digest('hex');

describe('socket ingest (native/socket-ingest.c)', () => {
  let dir: string;
  let conn: Connection;
  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ingest-'));
    conn = await connect();
  });
  afterEach(() => {
    conn.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is built', () => {
    expect(canIngestSockets).to.equal(true);
  });

  for (const algorithm of ['sha256', 'sha512'] as const) {
    it(`writes and hashes (${algorithm}) a body sent in pieces after the part Node read, and reads nothing past its end`, async () => {
      const data = randomBytes(3 * 1024 * 1024 + 12345);
      const prefix = data.subarray(0, 40_000);
      const after = Buffer.from('GET /next HTTP/1.1\r\n\r\n');
      const file = path.join(dir, 'upload');
      const progress: number[] = [];
      const body = bodyOf(conn.server, data.length, prefix);
      const done = ingestSocket(body, file, 0, algorithm, (end) => progress.push(end));
      // In pieces, with pauses: the thread waits for each.
      for (let at = prefix.length; at < data.length; at += 700_000) {
        conn.client.write(data.subarray(at, Math.min(at + 700_000, data.length)));
        await new Promise((r) => setTimeout(r, 10));
      }
      conn.client.write(after);
      expect(await done).to.deep.equal({ bytes: data.length, hex: hex(algorithm, data) });
      expect(readFileSync(file).equals(data)).to.equal(true);
      expect(progress.length).to.be.greaterThan(0);
      expect(progress).to.deep.equal([...progress].sort((a, b) => a - b));
      expect(progress[progress.length - 1]).to.be.at.most(data.length);
      expect(body.released).to.equal(1);
      // What follows the body is still on the socket, for Node.
      conn.server.resume();
      const next = await new Promise<Buffer>((resolve) => conn.server.once('data', resolve));
      expect(next.toString()).to.equal(after.toString());
    });
  }

  it('writes from an offset into an existing file, keeping what is before it', async () => {
    const file = path.join(dir, 'upload');
    const head = randomBytes(5000);
    writeFileSync(file, head);
    const data = randomBytes(2 * 1024 * 1024);
    const done = ingestSocket(bodyOf(conn.server, data.length), file, head.length, 'sha256', () => undefined);
    conn.client.write(data);
    expect((await done).hex).to.equal(hex('sha256', data));
    expect(readFileSync(file).equals(Buffer.concat([head, data]))).to.equal(true);
  });

  it('fails with ECONNABORTED when the client closes the connection before the end of the body', async () => {
    const done = ingestSocket(bodyOf(conn.server, 4 * 1024 * 1024), path.join(dir, 'upload'), 0, 'sha256', () => undefined);
    conn.client.end(randomBytes(1024 * 1024 + 5));
    const err = await done.then(
      () => null,
      (e: NodeJS.ErrnoException & { bytesRead: number }) => e,
    );
    expect(err).to.include({ code: 'ECONNABORTED', syscall: 'read', bytesRead: 1024 * 1024 + 5 });
    expect(err?.message).to.match(/closed the connection after 1048581 bytes/);
  });

  it('fails with ETIMEDOUT when the client sends nothing for the idle time', async () => {
    const started = Date.now();
    const done = ingestSocket(bodyOf(conn.server, 1024 * 1024, Buffer.alloc(0), 300), path.join(dir, 'upload'), 0, 'sha256', () => undefined);
    conn.client.write(Buffer.alloc(1000));
    const err = await done.then(
      () => null,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).to.equal('ETIMEDOUT');
    expect(Date.now() - started).to.be.within(250, 3000);
  });

  it('stops with ECANCELED when the connection is closed here meanwhile', async () => {
    const done = ingestSocket(bodyOf(conn.server, 1024 * 1024), path.join(dir, 'upload'), 0, 'sha256', () => undefined);
    conn.client.write(Buffer.alloc(1000));
    setTimeout(() => conn.server.destroy(), 50);
    const err = await done.then(
      () => null,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).to.equal('ECANCELED');
  });

  it(`hands a body over once, and none while ${MAX_RUNNING_INGESTS} ingests run`, async () => {
    const source = {};
    const body = bodyOf(conn.server, 10);
    let taken = 0;
    offerSocketBody(source, () => (taken++, body));
    expect(takeSocketBody(source)).to.equal(body);
    expect(takeSocketBody(source)).to.equal(null);
    const others = await Promise.all(Array.from({ length: MAX_RUNNING_INGESTS }, () => connect()));
    try {
      const running = others.map((other, i) =>
        ingestSocket(bodyOf(other.server, 1024 * 1024), path.join(dir, `u${i}`), 0, 'sha256', () => undefined).catch((e: NodeJS.ErrnoException) => e.code),
      );
      offerSocketBody(source, () => (taken++, body));
      expect(takeSocketBody(source)).to.equal(null);
      for (const other of others) other.client.end();
      expect(new Set(await Promise.all(running))).to.deep.equal(new Set(['ECONNABORTED']));
      offerSocketBody(source, () => (taken++, body));
      expect(takeSocketBody(source)).to.equal(body);
      expect(taken).to.equal(2);
    } finally {
      for (const other of others) other.close();
    }
  });

  it('stops with ECANCELED when the connection is closed here while the client goes on sending', async () => {
    const done = ingestSocket(bodyOf(conn.server, 256 * 1024 * 1024), path.join(dir, 'upload'), 0, 'sha256', () => undefined);
    const piece = randomBytes(256 * 1024);
    const sending = setInterval(() => conn.client.write(piece), 1);
    conn.client.on('error', () => undefined);
    setTimeout(() => conn.server.destroy(), 100);
    try {
      const err = await done.then(
        () => null,
        (e: NodeJS.ErrnoException & { bytesRead: number }) => e,
      );
      expect(err?.code).to.equal('ECANCELED');
      expect(err?.bytesRead).to.be.below(256 * 1024 * 1024);
    } finally {
      clearInterval(sending);
    }
  });

  it('fails with the file error when the file cannot be opened, and reads nothing', async () => {
    conn.client.write('first bytes');
    await new Promise((r) => setTimeout(r, 20));
    const body = bodyOf(conn.server, 1024 * 1024);
    const err = await ingestSocket(body, path.join(dir, 'missing', 'upload'), 0, 'sha256', () => undefined).then(
      () => null,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err).to.include({ code: 'ENOENT', syscall: 'open' });
    expect(body.released).to.equal(1);
    conn.server.resume();
    expect((await new Promise<Buffer>((resolve) => conn.server.once('data', resolve))).toString()).to.equal('first bytes');
  });
});
