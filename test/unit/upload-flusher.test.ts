import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileAppender } from '../../src/storage/file-appender.js';
import { RecentPages } from '../../src/storage/recent-pages.js';
import { UploadFlusher } from '../../src/storage/upload-flusher.js';
import { cachedBytes } from '../helpers/page-cache.js';

const MiB = 1024 * 1024;

/** Pages with no budget: each flush drops what it flushed. */
const pages = new RecentPages({ budget: 0, maxFiles: 64, keepFrom: 0, keepWholeFrom: 0 });

/** `count` MiB of `body` from MiB `first`, one every `gapMs` ms, as from a network. */
async function* arriving(body: Buffer, first: number, count: number, gapMs = 0): AsyncGenerator<Buffer> {
  for (let k = first; k < first + count; k++) {
    if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
    yield body.subarray(k * MiB, (k + 1) * MiB);
  }
}

describe('UploadFlusher (background flushes of an upload, across its requests)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'flusher-'));
  });
  afterEach(() => {
    // Nothing was kept: no descriptor was taken to drop it later.
    expect(pages.openFiles).to.equal(0);
    rmSync(dir, { recursive: true, force: true });
  });

  it('flushes while a writer writes, and the bytes are as written', async () => {
    const file = path.join(dir, 'f');
    const body = randomBytes(12 * MiB + 99);
    const chunks = Array.from({ length: 13 }, (_, k) => body.subarray(k * MiB, (k + 1) * MiB));
    const flusher = new UploadFlusher(file, { every: MiB });
    await pipeline(Readable.from(chunks), await FileAppender.open(file, 0, { flusher }));
    await flusher.settle();
    expect(flusher.flushes).to.be.greaterThan(0);
    expect(readFileSync(file).equals(body)).to.equal(true);
  });

  it('counts the bytes of earlier writers: an upload in chunks smaller than `every` is flushed as it goes', async () => {
    const file = path.join(dir, 'f');
    const body = randomBytes(12 * MiB);
    const flusher = new UploadFlusher(file, { every: 6 * MiB, pages });
    // Three requests of 4 MiB, none of which writes 6 MiB on its own.
    for (let part = 0; part < 3; part++) {
      await pipeline(Readable.from(arriving(body, part * 4, 4)), await FileAppender.open(file, part * 4 * MiB, { flusher }));
    }
    await flusher.settle();
    expect(flusher.flushes).to.be.greaterThan(0);
    // What the flushes covered (at least the first 6 MiB) is out of the cache.
    expect(cachedBytes(file)).to.be.at.most(6 * MiB);
    expect(readFileSync(file).equals(body)).to.equal(true);
  });

  it('starts its first flush after `first` bytes, sooner than `every`: a small blob is partly flushed before its close', async () => {
    const body = randomBytes(4 * MiB);
    const flushesOf = async (first?: number) => {
      const file = path.join(dir, `f-${first ?? 'none'}`);
      const flusher = new UploadFlusher(file, { every: 8 * MiB, first, pages });
      // Through the page cache, as the store writes when it can drop what it flushed.
      await pipeline(Readable.from(arriving(body, 0, 4)), await FileAppender.open(file, 0, { flusher, direct: false }));
      await flusher.settle();
      const cached = cachedBytes(file); // before reading the file back caches it all
      expect(readFileSync(file).equals(body)).to.equal(true);
      return { flushes: flusher.flushes, cached };
    };
    const early = await flushesOf(2 * MiB);
    expect(early.flushes).to.be.at.least(1);
    expect(early.cached).to.be.at.most(2 * MiB); // at least the first 2 MiB flushed and dropped
    // Without it, nothing of a 4 MiB upload is flushed before the close (every 8 MiB).
    expect(await flushesOf()).to.deep.equal({ flushes: 0, cached: 4 * MiB });
  });

  it('hands what its flushes covered to its pages (which drop it here: no budget), and leaves it cached without pages', async () => {
    const body = randomBytes(16 * MiB);
    const dropping = new UploadFlusher(path.join(dir, 'f'), { every: 2 * MiB, pages });
    await pipeline(Readable.from(arriving(body, 0, 16, 20)), await FileAppender.open(path.join(dir, 'f'), 0, { flusher: dropping, direct: false }));
    const keeping = new UploadFlusher(path.join(dir, 'g'), { every: 2 * MiB });
    await pipeline(Readable.from(arriving(body, 0, 16, 20)), await FileAppender.open(path.join(dir, 'g'), 0, { flusher: keeping, direct: false }));
    await Promise.all([dropping.settle(), keeping.settle()]);
    expect(dropping.flushes).to.be.greaterThan(0);
    expect(keeping.flushes).to.be.greaterThan(0);
    // What the last flushes did not cover is still cached (the store drops it after its own flush).
    expect(cachedBytes(path.join(dir, 'f'))).to.be.below(body.length / 2);
    expect(cachedBytes(path.join(dir, 'g'))).to.equal(body.length);
  });

  it('keeps a failed flush: settle and every later check throw it, though every write succeeded', async () => {
    // /dev/null takes every write and refuses fdatasync (EINVAL).
    const flusher = new UploadFlusher('/dev/null', { every: MiB });
    const chunks = Array.from({ length: 4 }, () => randomBytes(MiB));
    await pipeline(Readable.from(chunks), await FileAppender.open('/dev/null', 0, { flusher }));
    expect(flusher.flushes).to.be.greaterThan(0);
    let settled: NodeJS.ErrnoException | undefined;
    await flusher.settle().catch((e: NodeJS.ErrnoException) => (settled = e));
    expect(settled?.code).to.equal('EINVAL');
    expect(() => flusher.check()).to.throw(/EINVAL/);
    // No flush starts after a failure.
    const started = flusher.flushes;
    flusher.written(64 * MiB);
    expect(flusher.flushes).to.equal(started);
  });

  it('keeps its count when the next writer starts where the last one ended, while a flush runs', async () => {
    const file = path.join(dir, 'f');
    const body = randomBytes(8 * MiB);
    const flusher = new UploadFlusher(file, { every: 4 * MiB });
    await pipeline(Readable.from(arriving(body, 0, 4)), await FileAppender.open(file, 0));
    // A flush of the first 4 MiB starts; the next writer comes while it runs.
    flusher.written(4 * MiB);
    expect(flusher.flushes).to.equal(1);
    flusher.rewriteFrom(4 * MiB);
    await flusher.settle();
    // The flush counted: the same 4 MiB are not flushed again ...
    expect(flusher.flushes).to.equal(1);
    // ... nor with less than 4 MiB more.
    await pipeline(Readable.from([body.subarray(4 * MiB, 8 * MiB - 1)]), await FileAppender.open(file, 4 * MiB, { flusher }));
    await flusher.settle();
    expect(flusher.flushes).to.equal(1);
    expect(readFileSync(file).equals(body.subarray(0, 8 * MiB - 1))).to.equal(true);
  });

  it('counts bytes written again after a truncation toward the next flush', async () => {
    const file = path.join(dir, 'f');
    const body = randomBytes(8 * MiB);
    const flusher = new UploadFlusher(file, { every: 4 * MiB, pages });
    await pipeline(Readable.from(arriving(body, 0, 8)), await FileAppender.open(file, 0, { flusher }));
    await flusher.settle();
    const before = flusher.flushes;
    // A failed write is undone: the file is cut back to 2 MiB and written again from there.
    await truncate(file, 2 * MiB);
    flusher.rewriteFrom(2 * MiB);
    await pipeline(Readable.from(arriving(body, 2, 6)), await FileAppender.open(file, 2 * MiB, { flusher }));
    await flusher.settle();
    expect(flusher.flushes).to.be.greaterThan(before);
    expect(readFileSync(file).equals(body)).to.equal(true);
  });
});
