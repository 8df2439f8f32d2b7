import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileAppender } from '../../src/storage/file-appender.js';

describe('FileAppender (pooled, direct-I/O file writes)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'appender-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const direct of [true, false]) {
    it(`writes the same bytes ${direct ? 'with' : 'without'} direct I/O, from any offset`, async () => {
      const file = path.join(dir, 'f');
      const head = randomBytes(5000);
      const body = randomBytes(2 * 1024 * 1024 + 777);
      writeFileSync(file, head);
      const chunks = [body.subarray(0, 3), body.subarray(3, 1024 * 1024), body.subarray(1024 * 1024)];
      await pipeline(Readable.from(chunks), await FileAppender.open(file, head.length, { direct }));
      expect(readFileSync(file).equals(Buffer.concat([head, body]))).to.equal(true);
    });
  }

  it('shows every byte to its tap in order, and fills no buffer again before the tap is done with it', async () => {
    const file = path.join(dir, 'f');
    const head = randomBytes(5000);
    writeFileSync(file, head);
    const body = randomBytes(6 * 1024 * 1024 + 321);
    const seen: Promise<Buffer>[] = [];
    let shared = 0;
    // Reads each chunk only some time after it was handed over, as the hashing worker does.
    const tap = {
      update(chunk: Buffer): Promise<void> {
        if (chunk.buffer instanceof SharedArrayBuffer) shared++;
        const read = new Promise<Buffer>((resolve) => setTimeout(() => resolve(Buffer.from(chunk)), 5));
        seen.push(read);
        return read.then(() => undefined);
      },
    };
    const chunks = [body.subarray(0, 70_000), body.subarray(70_000, 3 * 1024 * 1024), body.subarray(3 * 1024 * 1024)];
    await pipeline(Readable.from(chunks), await FileAppender.open(file, head.length, { tap }));
    expect(Buffer.concat(await Promise.all(seen)).equals(body)).to.equal(true);
    expect(shared).to.equal(seen.length); // the hashing worker reads shared memory where it is
    expect(readFileSync(file).equals(Buffer.concat([head, body]))).to.equal(true);
  });

  it('keeps a buffer whose write failed until its tap is done with it', async () => {
    const MiB = 1024 * 1024;
    let release = (): void => undefined;
    const reading = new Promise<void>((resolve) => (release = resolve));
    let held: Buffer | null = null;
    const slowTap = {
      update(chunk: Buffer): Promise<void> {
        held = chunk;
        return reading;
      },
    };
    // Every write to /dev/full fails at once (ENOSPC), while the tap is still reading.
    const failing = pipeline(Readable.from([randomBytes(MiB)]), await FileAppender.open('/dev/full', 0, { tap: slowTap }));
    const outcome = failing.then(
      () => null,
      (err: NodeJS.ErrnoException) => err,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Another writer takes buffers meanwhile: none may be the one the tap still reads.
    const taken: Buffer[] = [];
    const tap = {
      update(chunk: Buffer): Promise<void> {
        taken.push(chunk);
        return Promise.resolve();
      },
    };
    await pipeline(Readable.from([randomBytes(3 * MiB)]), await FileAppender.open(path.join(dir, 'g'), 0, { tap }));
    const first = held as Buffer | null;
    expect(first).to.not.equal(null);
    expect(taken).to.have.length(3);
    for (const chunk of taken) expect(chunk.buffer === first?.buffer && chunk.byteOffset === first.byteOffset).to.equal(false);
    release();
    expect((await outcome)?.code).to.equal('ENOSPC');
  });

  it('keeps to a few shared slabs, and serves further concurrent writers from ordinary memory', async () => {
    const MiB = 1024 * 1024;
    const slabs = new Set<ArrayBufferLike>();
    let ordinary = 0;
    const tap = {
      update(chunk: Buffer): Promise<void> {
        if (chunk.buffer instanceof SharedArrayBuffer) slabs.add(chunk.buffer);
        else ordinary++;
        return new Promise((resolve) => setTimeout(resolve, 30)); // every writer holds its buffers a while
      },
    };
    const bodies = Array.from({ length: 12 }, () => randomBytes(6 * MiB));
    await Promise.all(
      bodies.map(async (body, i) => {
        const chunks = Array.from({ length: 6 }, (_, k) => body.subarray(k * MiB, (k + 1) * MiB));
        await pipeline(Readable.from(chunks), await FileAppender.open(path.join(dir, `f${i}`), 0, { tap }));
      }),
    );
    expect(slabs.size).to.be.within(1, 5); // 8 MiB each, kept for the life of the process
    expect(ordinary).to.be.greaterThan(0); // 12 writers holding up to 5 buffers each need more than 40
    for (const [i, body] of bodies.entries()) expect(readFileSync(path.join(dir, `f${i}`)).equals(body)).to.equal(true);
  });

  it('truncates when it starts at offset 0', async () => {
    const file = path.join(dir, 'f');
    writeFileSync(file, randomBytes(10_000));
    await pipeline(Readable.from([Buffer.from('short')]), await FileAppender.open(file, 0));
    expect(readFileSync(file, 'utf8')).to.equal('short');
  });

  it('refuses to append to a file that is not there, and creates nothing', async () => {
    const file = path.join(dir, 'missing');
    let error: NodeJS.ErrnoException | undefined;
    await FileAppender.open(file, 100).catch((e: NodeJS.ErrnoException) => (error = e));
    expect(error?.code).to.equal('ENOENT');
    expect(existsSync(file)).to.equal(false);
  });

  it('fails the pipeline when its source fails, leaving what was written', async () => {
    const file = path.join(dir, 'f');
    const first = randomBytes(1024 * 1024);
    const appender = await FileAppender.open(file, 0);
    const source = new Readable({ read() {} });
    source.push(first);
    setImmediate(() => source.destroy(new Error('client went away')));
    let error: Error | undefined;
    await pipeline(source, appender).catch((e: Error) => (error = e));
    expect(error?.message).to.equal('client went away');
    expect(readFileSync(file).length).to.be.at.most(first.length);
  });

  it('is a Writable that honours backpressure', async () => {
    const appender = await FileAppender.open(path.join(dir, 'f'), 0);
    expect(appender).to.be.instanceOf(Writable);
    expect(appender.writableHighWaterMark).to.equal(1024 * 1024);
    appender.destroy();
  });
});
