/** Upload digests computed by worker threads. */
import { expect } from 'chai';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { Hashing } from '../../src/registry/hashing.js';

describe('hashing off the request thread', () => {
  let hashing: Hashing;
  beforeEach(() => (hashing = new Hashing(2)));
  afterEach(() => hashing.close());

  it('gives the same digests as hashing in place, for chunks of every size across batch boundaries', async () => {
    const sizes = [0, 1, 65_536, 1024 * 1024 - 3, 5, 1024 * 1024, 2 * 1024 * 1024 + 7, 333];
    const chunks = sizes.map((n) => randomBytes(n));
    for (const algorithm of ['sha256', 'sha512'] as const) {
      const stream = hashing.open(algorithm);
      const reference = createHash(algorithm);
      for (const chunk of chunks) {
        await stream.update(chunk);
        reference.update(chunk);
      }
      expect(await stream.digest()).to.equal(reference.digest('hex'));
    }
    expect(await hashing.open('sha256').digest()).to.equal(createHash('sha256').digest('hex'));
  });

  it('keeps streams apart, in any interleaving', async () => {
    const a = hashing.open('sha256');
    const b = hashing.open('sha256');
    const c = hashing.open('sha256');
    const parts = Array.from({ length: 12 }, () => randomBytes(300_000));
    for (const [i, part] of parts.entries()) await [a, b, c][i % 3]!.update(part);
    const expected = [0, 1, 2].map((k) => parts.filter((_, i) => i % 3 === k).reduce((h, p) => h.update(p), createHash('sha256')).digest('hex'));
    expect(await Promise.all([a.digest(), b.digest(), c.digest()])).to.deep.equal(expected);
  });

  it('asks the writer to wait while more than a few MiB are not hashed yet, and lets it go on', async () => {
    const stream = hashing.open('sha256');
    const reference = createHash('sha256');
    let waited = 0;
    for (let i = 0; i < 64; i++) {
      const chunk = randomBytes(512 * 1024);
      reference.update(chunk);
      const wait = stream.update(chunk);
      if (wait) {
        waited++;
        await wait;
      }
    }
    expect(waited).to.be.greaterThan(0);
    expect(await stream.digest()).to.equal(reference.digest('hex'));
  });

  it('hashes large chunks of shared memory where they are, holding them until hashed, in order with copied bytes', async () => {
    const MiB = 1024 * 1024;
    const shared = randomFillSync(Buffer.from(new SharedArrayBuffer(2 * MiB)));
    const stream = hashing.open('sha256');
    const reference = createHash('sha256');
    const feed = (chunk: Buffer) => {
      reference.update(chunk);
      return stream.update(chunk);
    };
    expect(feed(randomBytes(1000))).to.equal(undefined); // copied into a batch, not sent yet
    const whole = shared.subarray(0, MiB);
    const wait = feed(whole);
    expect(wait).to.be.instanceOf(Promise);
    await wait;
    randomFillSync(whole); // hashed already: changing the memory now changes nothing
    const small = shared.subarray(MiB, MiB + 100);
    expect(feed(small)).to.equal(undefined); // small shared chunks are copied, with no wait
    randomFillSync(small);
    const last = shared.subarray(MiB + 100);
    await feed(last);
    expect(await stream.digest()).to.equal(reference.digest('hex'));
  });

  it('gives shared memory back when its stream is dropped or its worker stops', async () => {
    const shared = Buffer.from(new SharedArrayBuffer(1024 * 1024));
    const dropped = hashing.open('sha256');
    const held = [dropped.update(shared), dropped.update(shared)];
    dropped.dispose();
    const stopped = hashing.open('sha256');
    held.push(stopped.update(shared));
    await hashing.close();
    await Promise.all(held); // each resolves instead of waiting forever
    expect(held.every((h) => h instanceof Promise)).to.equal(true);
  });

  it('fails the streams of a stopped worker (callers then hash the bytes on disk), and starts a new one for new streams', async () => {
    const stream = hashing.open('sha256');
    await stream.update(randomBytes(2 * 1024 * 1024));
    await hashing.close();
    expect(await stream.digest().then(() => 'resolved', (err: Error) => err.message)).to.match(/stopped/);
    const next = hashing.open('sha256');
    await next.update(Buffer.from('again'));
    expect(await next.digest()).to.equal(createHash('sha256').update('again').digest('hex'));
  });

  it('lets a writer waiting on a stream go on when the stream is dropped (an upload cancelled meanwhile)', async () => {
    const stream = hashing.open('sha256');
    let wait: Promise<void> | void;
    do wait = stream.update(randomBytes(1024 * 1024));
    while (!wait);
    stream.dispose();
    await wait; // resolves instead of waiting forever
    expect(stream.update(Buffer.from('more'))).to.equal(undefined);
    expect(await stream.digest().then(() => 'resolved', (err: Error) => err.message)).to.match(/dropped/);
  });
});
