/**
 * The bench's turn-taking: the rounds of the two registries alternate, one target runs at a
 * time, and a target that ends (or fails) early leaves the other to finish alone; a load
 * measured in windows covers every window once; the pull client checks what it reads; the
 * tag listing's keep-alive connection reads sized and chunked answers and fails clearly; a blob
 * written into a buffer is the blob it streams.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { OciClient } from '../../bench/lib/client.js';
import { PatternBlob } from '../../bench/lib/data.js';
import { readCpuMs } from '../../bench/lib/rss.js';
import { Baton } from '../../bench/lib/suite.js';
import { windowedLoop } from '../../bench/lib/stats.js';
import type { TargetKind } from '../../bench/lib/servers.js';

const ORDER: TargetKind[] = ['reference', 'gateway'];

/** Runs `body` for each target through Baton.run, as Suite.run does, logging what each does. */
async function runBoth(baton: Baton, body: (kind: TargetKind, turn: () => Promise<void>, log: (s: string) => void) => Promise<void>) {
  const log: string[] = [];
  await Promise.all(
    ORDER.map((kind) =>
      baton.run(kind, () => body(kind, () => baton.pass(kind), (s) => log.push(`${kind[0]}:${s}`))).catch(() => log.push(`${kind[0]}:failed`)),
    ),
  );
  return log;
}

describe('bench turn-taking (Baton)', () => {
  it('alternates the rounds of the two targets, the reference first, with a hand-over before each', async () => {
    const handedTo: TargetKind[] = [];
    const baton = new Baton(ORDER, (kind) => handedTo.push(kind));
    const log = await runBoth(baton, async (_kind, turn, note) => {
      note('setup');
      for (let r = 0; r < 3; r++) {
        await turn();
        note(`round${r}`);
        await new Promise((resolve) => setTimeout(resolve, 1)); // a round that awaits I/O keeps the turn
        note(`end${r}`);
      }
    });
    expect(log).to.deep.equal([
      'r:setup', 'g:setup',
      'r:round0', 'r:end0', 'g:round0', 'g:end0',
      'r:round1', 'r:end1', 'g:round1', 'g:end1',
      'r:round2', 'r:end2', 'g:round2', 'g:end2',
    ]);
    // setup → g, g → r before each round, and the reference's leaving hands the last round over.
    expect(handedTo).to.deep.equal(['gateway', 'reference', 'gateway', 'reference', 'gateway', 'reference', 'gateway']);
  });

  it('lets the other target finish alone when one returns early or fails', async () => {
    const baton = new Baton(ORDER, () => undefined);
    const log = await runBoth(baton, async (kind, turn, note) => {
      if (kind === 'reference') {
        await turn();
        note('round0');
        throw new Error('registry died');
      }
      for (let r = 0; r < 3; r++) {
        await turn();
        note(`round${r}`);
      }
    });
    expect(log).to.deep.equal(['r:round0', 'r:failed', 'g:round0', 'g:round1', 'g:round2']);
  });

  it('does not wait when a case runs against one target only', async () => {
    const baton = new Baton(ORDER, () => undefined);
    const log = await runBoth(baton, async (kind, turn, note) => {
      if (kind !== 'gateway') return;
      await turn();
      note('a');
      await turn();
      note('b');
    });
    expect(log).to.deep.equal(['g:a', 'g:b']);
  });
});

describe('bench windowed load', () => {
  it('measures in windows, each after its turn, with distinct sequence numbers and every window counted', async () => {
    const seen: number[] = [];
    const windowsStarted: number[] = [];
    const res = await windowedLoop({ concurrency: 2, durationMs: 90, warmup: 4 }, 3, async () => void windowsStarted.push(seen.length), async (seq) => {
      seen.push(seq);
      await new Promise((resolve) => setTimeout(resolve, 2));
    });
    expect(windowsStarted).to.have.length(3);
    expect(new Set(seen).size).to.equal(seen.length);
    // Warm-up: 4 requests before the first window, one per worker before the others.
    const warmups = 4 + 2 + 2;
    expect(res.requests).to.equal(seen.length - warmups);
    expect(res.latencies).to.have.length(res.requests);
    expect(res.elapsedMs).to.be.within(85, 200);
    expect(res.perSecond).to.be.closeTo((res.requests / res.elapsedMs) * 1000, 1e-9);
    expect(res.p50Ms).to.be.at.least(2);
  });
});

describe('bench client pull (own connection, reused read buffer)', () => {
  /** A server that answers every GET with `respond`, on a free loopback port. */
  async function serve(respond: (socket: import('node:net').Socket) => void) {
    const net = await import('node:net');
    const server = net.createServer((socket) => socket.once('data', () => respond(socket)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as import('node:net').AddressInfo;
    return { client: new OciClient(`http://127.0.0.1:${port}`, { maxSockets: 1, timeoutMs: 2000 }), close: () => server.close() };
  }
  const body = Buffer.alloc(9 * 1024 * 1024 + 17, 7);
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;

  it('hashes a body that spans many reads, and checks its digest and size', async () => {
    const { client, close } = await serve((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.write(body.subarray(0, 100));
      setTimeout(() => socket.end(body.subarray(100)), 20);
    });
    try {
      expect(await client.pullBlob('a/b', digest, body.length)).to.equal(body.length);
      await expectRejection(client.pullBlob('a/b', `sha256:${'0'.repeat(64)}`), /body hashes to sha256:/);
      await expectRejection(client.pullBlob('a/b', digest, body.length + 1), /bytes, expected/);
    } finally {
      close();
    }
  });

  it('fails on a short body, a missing length and a status other than 200', async () => {
    const answers = [
      `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\nshort`,
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}',
    ];
    let next = 0;
    const { client, close } = await serve((socket) => socket.end(answers[next++]));
    try {
      await expectRejection(client.pullBlob('a/b', digest), /connection closed after 5 of \d+ body bytes/);
      await expectRejection(client.pullBlob('a/b', digest), /without Content-Length/);
      await expectRejection(client.pullBlob('a/b', digest), /-> 404 \(expected 200\)/);
    } finally {
      close();
    }
  });
});

describe('bench client tag listing (one keep-alive connection read by hand)', () => {
  /**
   * A server that answers each GET it reads, in order, with the next of `answers` (a function
   * of the request path), on a free loopback port; it counts the connections it accepted.
   */
  async function serve(answers: Array<(path: string) => string | { cut: string }>) {
    const net = await import('node:net');
    const seen = { connections: 0, paths: [] as string[] };
    let next = 0;
    const server = net.createServer((socket) => {
      seen.connections++;
      let pending = '';
      socket.on('data', (chunk) => {
        pending += chunk.toString('latin1');
        for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
          const path = pending.slice(0, end).split(' ')[1] ?? '';
          pending = pending.slice(end + 4);
          seen.paths.push(path);
          const answer = answers[next++];
          const text = answer?.(path);
          if (typeof text === 'string') socket.write(text);
          else if (text) socket.end(text.cut);
          else socket.destroy();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as import('node:net').AddressInfo;
    return { client: new OciClient(`http://127.0.0.1:${port}`, { maxSockets: 1, timeoutMs: 2000 }), seen, close: () => server.close() };
  }
  const page = (tags: string[], extra = '') => {
    const body = JSON.stringify({ name: 'a/b', tags });
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  const chunked = (tags: string[]) => {
    const body = JSON.stringify({ name: 'a/b', tags });
    const half = body.length >> 1;
    const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;
    return `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(body.slice(0, half))}${chunk(body.slice(half))}0\r\n\r\n`;
  };

  it('follows Link pages over one connection, bodies sized or chunked', async () => {
    const { client, seen, close } = await serve([
      () => page(['t1', 't2'], 'Link: </v2/a/b/tags/list?n=2&last=t2>; rel="next"\r\n'),
      () => chunked(['t3', 't4']),
      () => chunked(['t1', 't2', 't3', 't4']),
    ]);
    try {
      expect(await client.listTags('a/b', 2, { lean: true })).to.deep.equal({ tags: ['t1', 't2', 't3', 't4'], pages: 2, largestPage: 2 });
      expect((await client.listTags('a/b', undefined, { lean: true })).tags).to.have.length(4);
      expect(seen.paths).to.deep.equal(['/v2/a/b/tags/list?n=2', '/v2/a/b/tags/list?n=2&last=t2', '/v2/a/b/tags/list']);
      expect(seen.connections).to.equal(1);
    } finally {
      client.close();
      close();
    }
  });

  it('fails clearly on a cut response or a status other than 200, and opens a new connection after', async () => {
    const { client, seen, close } = await serve([
      () => ({ cut: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"tags":' }),
      () => 'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}',
      () => page(['t1'], 'Connection: close\r\n'),
      () => page(['t2']),
    ]);
    try {
      await expectRejection(client.listTags('a/b', undefined, { lean: true }), /connection closed before the whole response \(48 bytes of it read\)/);
      await expectRejection(client.listTags('a/b', undefined, { lean: true }), /-> 404 \(expected 200\)/);
      expect((await client.listTags('a/b', undefined, { lean: true })).tags).to.deep.equal(['t1']);
      expect((await client.listTags('a/b', undefined, { lean: true })).tags).to.deep.equal(['t2']);
      // One for the cut answer, one for the 404 and the answer that closed, one after it.
      expect(seen.connections).to.equal(3);
      client.close();
      await expectRejection(client.listTags('a/b', undefined, { lean: true }), /the connection was closed/);
    } finally {
      client.close();
      close();
    }
  });
});

describe('bench blob content', () => {
  it('writes into a reused buffer the bytes it streams, whatever the buffer held before', async () => {
    const blob = new PatternBlob('fill-test', 3 * 1024 * 1024 + 5);
    const streamed: Buffer[] = [];
    for await (const chunk of blob.stream()) streamed.push(chunk as Buffer);
    const buffer = Buffer.alloc(4 * 1024 * 1024, 0xaa);
    const bytes = blob.fill(buffer);
    expect(bytes.length).to.equal(blob.size);
    expect(bytes.equals(Buffer.concat(streamed))).to.equal(true);
    expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).to.equal(blob.digest);
    expect(() => blob.fill(Buffer.alloc(blob.size - 1))).to.throw(RangeError);
  });
});

describe('bench CPU reading', () => {
  it("reads a process's CPU time as the kernel counts it, and NaN for no process", async () => {
    // A child that spins until it has used 300 ms of CPU, says so, then waits to be read. It
    // counts its system time too: the loop's own getrusage calls cost it, and on a virtual
    // machine whose system calls were slow, 300 ms of user time came with 1.5 s of system time.
    const spin =
      'const s = process.cpuUsage(); for (;;) { const u = process.cpuUsage(s); if (u.user + u.system >= 300000) break; } console.log("spun"); setTimeout(() => {}, 60000)';
    const child = spawn(process.execPath, ['-e', spin], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const before = readCpuMs(child.pid as number);
      await new Promise((resolve) => child.stdout.once('data', resolve));
      const used = readCpuMs(child.pid as number) - before;
      // The spin, plus whatever of Node's start-up came after the first reading.
      expect(used).to.be.within(290, 1000);
    } finally {
      child.kill();
    }
    expect(readCpuMs(2 ** 22 + 1)).to.be.NaN;
  });
});

async function expectRejection(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const outcome = await promise.then(
    () => 'resolved',
    (err: Error) => err.message,
  );
  expect(outcome).to.match(pattern);
}
