/**
 * The one BlobStore suite every driver must pass unchanged (filesystem today; S3 joins
 * the list when its driver lands). It also fails a driver that leaves files behind.
 */
import { expect } from 'chai';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BlobNotFoundError, type BlobStore } from '../../src/storage/blobstore.js';
import { FsBlobStore, type FsBlobStoreOptions } from '../../src/storage/fs.js';
import { parseDigest, type Digest } from '../../src/registry/names.js';
import { cachedBytes } from '../helpers/page-cache.js';

interface DriverUnderTest {
  name: string;
  create(): Promise<{ store: BlobStore; cleanup(): Promise<void>; files(): string[] }>;
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const full = path.join(dir, entry);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(path.relative(root, full));
    }
  };
  walk(root);
  return out;
}

async function closeAndRemove(store: FsBlobStore, root: string): Promise<void> {
  await store.close();
  rmSync(root, { recursive: true, force: true });
}

const DRIVERS: DriverUnderTest[] = [
  {
    name: 'filesystem',
    async create() {
      const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
      const store = new FsBlobStore(root);
      await store.init();
      return { store, files: () => listFiles(root), cleanup: () => closeAndRemove(store, root) };
    },
  },
  {
    // What a filesystem that refuses RENAME_NOREPLACE (EINVAL), or a machine without the addon, gets: check, then rename.
    name: 'filesystem, staging without RENAME_NOREPLACE',
    async create() {
      const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
      const store = new FsBlobStore(root);
      (store as unknown as { replaceOnly: boolean }).replaceOnly = true;
      await store.init();
      return { store, files: () => listFiles(root), cleanup: () => closeAndRemove(store, root) };
    },
  },
  {
    name: 'filesystem, fsync off',
    async create() {
      const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
      const store = new FsBlobStore(root, { fsync: false });
      await store.init();
      return { store, files: () => listFiles(root), cleanup: () => closeAndRemove(store, root) };
    },
  },
];

const digestOf = (data: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`);

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function writeUpload(store: BlobStore, id: string, offset: number, data: Buffer): Promise<void> {
  await pipeline(Readable.from([data]), await store.openUploadWriter(id, offset));
}

/** A filesystem store on a new root, removed afterwards. */
async function withFsStore(options: FsBlobStoreOptions, run: (store: FsBlobStore, root: string) => Promise<void>): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
  const store = new FsBlobStore(root, options);
  try {
    await store.init();
    await run(store, root);
  } finally {
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/** Stages a closed upload as the blob `data` and reads it back. */
async function expectStaged(store: BlobStore, id: string, data: Buffer): Promise<void> {
  await store.promoteUpload(id, digestOf(data), data.length);
  const opened = await store.open('staging', digestOf(data));
  expect((await readAll(opened!.stream)).equals(data)).to.equal(true);
}

for (const driver of DRIVERS) {
  describe(`BlobStore conformance: ${driver.name}`, () => {
    let store: BlobStore;
    let cleanup: () => Promise<void>;
    let files: () => string[];

    beforeEach(async () => {
      ({ store, cleanup, files } = await driver.create());
    });
    afterEach(async () => cleanup());

    it('appends upload chunks at offsets and promotes them into staging under the digest', async () => {
      const id = randomUUID();
      const a = Buffer.from('hello, ');
      const b = Buffer.from('world');
      await writeUpload(store, id, 0, a);
      await writeUpload(store, id, a.length, b);
      const whole = Buffer.concat([a, b]);
      expect(await readAll(await store.readUpload(id))).to.deep.equal(whole);
      const digest = digestOf(whole);
      await store.syncUpload(id);
      await store.promoteUpload(id, digest, whole.length);
      expect(await store.stat('staging', digest)).to.deep.equal({ size: whole.length });
      expect(await store.stat('committed', digest)).to.equal(null);
      const opened = await store.open('staging', digest);
      expect(await readAll(opened!.stream)).to.deep.equal(whole);
    });

    it('syncs an upload that has no bytes yet (a zero-byte upload has no file) without error', async () => {
      await store.syncUpload(randomUUID());
      expect(await store.syncUpload('../escape').catch((e: unknown) => e)).to.be.instanceOf(BlobNotFoundError);
    });

    it('keeps every byte of multi-MiB appends made of odd-sized chunks at unaligned offsets', async () => {
      const id = randomUUID();
      const whole = randomBytes(3 * 1024 * 1024 + 12_345);
      // Chunk sizes straddle the 4 KiB blocks and 1 MiB buffers the filesystem driver writes in.
      const sizes = [1, 4095, 70_000, 1024 * 1024 + 3, 65_536, 333_333];
      const cuts = [0, 12_345, 2 * 1024 * 1024 + 7, whole.length];
      for (let i = 0; i + 1 < cuts.length; i++) {
        const part = whole.subarray(cuts[i], cuts[i + 1]);
        const chunks: Buffer[] = [];
        for (let at = 0, k = 0; at < part.length; k++) {
          const size = sizes[k % sizes.length] as number;
          chunks.push(part.subarray(at, at + size));
          at += size;
        }
        await pipeline(Readable.from(chunks), await store.openUploadWriter(id, cuts[i] as number));
      }
      expect(createHash('sha256').update(await readAll(await store.readUpload(id))).digest('hex')).to.equal(
        createHash('sha256').update(whole).digest('hex'),
      );
      const digest = digestOf(whole);
      await store.promoteUpload(id, digest, whole.length);
      expect(await store.stat('staging', digest)).to.deep.equal({ size: whole.length });
    });

    it('stages an empty upload that never had a file, but nothing for an upload whose bytes are gone', async () => {
      const empty = Buffer.alloc(0);
      await store.promoteUpload(randomUUID(), digestOf(empty), 0);
      expect(await store.stat('staging', digestOf(empty))).to.deep.equal({ size: 0 });
      // Cancelled or purged while it finished: an empty file must not stand in for its bytes.
      const lost = digestOf(Buffer.from('bytes that were deleted'));
      const failure = await store.promoteUpload(randomUUID(), lost, 23).catch((e: unknown) => e);
      expect(failure).to.be.instanceOf(BlobNotFoundError);
      expect(await store.stat('staging', lost)).to.equal(null);
    });

    it('keeps content already staged whole, and replaces a cut file', async () => {
      const data = Buffer.from('the one true content');
      const digest = digestOf(data);
      const first = randomUUID();
      await writeUpload(store, first, 0, data);
      await store.promoteUpload(first, digest, data.length);
      const second = randomUUID();
      await writeUpload(store, second, 0, data);
      await store.promoteUpload(second, digest, data.length);
      expect(await store.listUploads()).to.deep.equal([]);
      expect((await readAll((await store.open('staging', digest))!.stream)).toString()).to.equal(data.toString());
      // A wrong-sized file under the digest (lost bytes) is replaced by the next push.
      await store.delete('staging', digest);
      await store.putStaged(digest, data.subarray(0, 3)).catch(() => undefined);
      expect(await store.stat('staging', digest)).to.deep.equal({ size: 3 });
      await store.putStaged(digest, data);
      expect(await store.stat('staging', digest)).to.deep.equal({ size: data.length });
      // And by an upload that stages it.
      await store.delete('staging', digest);
      await store.putStaged(digest, data.subarray(0, 3)).catch(() => undefined);
      const third = randomUUID();
      await writeUpload(store, third, 0, data);
      await expectStaged(store, third, data);
      expect(await store.listUploads()).to.deep.equal([]);
    });

    it('promotes an upload unflushed, replacing what is there, and flushes it where it is', async () => {
      const data = Buffer.from('content flushed after its answer');
      const digest = digestOf(data);
      // A file no record names, cut by a crash: an unflushed promotion must not keep it.
      await store.putStaged(digest, Buffer.alloc(data.length));
      const id = randomUUID();
      await writeUpload(store, id, 0, data);
      await store.promoteUpload(id, digest, data.length, { flushed: false });
      expect(await store.listUploads()).to.deep.equal([]);
      expect(await readAll((await store.open('staging', digest))!.stream)).to.deep.equal(data);
      await store.flushContent('staging', digest, id);
      await store.commit(digest);
      await store.flushContent('committed', digest);
      const missing = digestOf(Buffer.from('never stored'));
      expect(await store.flushContent('staging', missing).catch((e: unknown) => e)).to.be.instanceOf(BlobNotFoundError);
    });

    it('shows the bytes of each append to its tap, in order', async () => {
      const id = randomUUID();
      const whole = randomBytes(2 * 1024 * 1024 + 999);
      const seen: Buffer[] = [];
      const tap = { update: (chunk: Buffer) => void seen.push(Buffer.from(chunk)) };
      const cut = 4097;
      await pipeline(Readable.from([whole.subarray(0, cut)]), await store.openUploadWriter(id, 0, tap));
      expect(Buffer.concat(seen).equals(whole.subarray(0, cut))).to.equal(true);
      const parts = [whole.subarray(cut, 1024 * 1024), whole.subarray(1024 * 1024)];
      await pipeline(Readable.from(parts), await store.openUploadWriter(id, cut, tap));
      expect(Buffer.concat(seen).equals(whole)).to.equal(true);
      expect(await readAll(await store.readUpload(id))).to.deep.equal(whole);
    });

    it('truncates a failed append back to the last good offset', async () => {
      const id = randomUUID();
      await writeUpload(store, id, 0, Buffer.from('abcdef'));
      await store.truncateUpload(id, 3);
      await writeUpload(store, id, 3, Buffer.from('XY'));
      expect((await readAll(await store.readUpload(id))).toString()).to.equal('abcXY');
      await store.deleteUpload(id);
    });

    it('commits staged content to the committed area, idempotently', async () => {
      const data = Buffer.from('{"manifest":true}');
      const digest = digestOf(data);
      await store.putStaged(digest, data);
      await store.commit(digest);
      expect(await store.stat('staging', digest)).to.equal(null);
      expect(await store.stat('committed', digest)).to.deep.equal({ size: data.length });
      await store.commit(digest);
      expect(await store.stat('committed', digest)).to.deep.equal({ size: data.length });
    });

    it('fails to commit content that was never staged', async () => {
      const digest = digestOf(Buffer.from('never'));
      let failed = false;
      await store.commit(digest).catch(() => (failed = true));
      expect(failed).to.equal(true);
    });

    it('serves byte ranges', async () => {
      const data = Buffer.from('0123456789');
      const digest = digestOf(data);
      await store.putStaged(digest, data);
      const opened = await store.open('staging', digest, { start: 2, end: 5 });
      expect(opened!.size).to.equal(10);
      expect((await readAll(opened!.stream)).toString()).to.equal('2345');
    });

    it('returns null for absent content', async () => {
      const digest = digestOf(Buffer.from('absent'));
      expect(await store.open('committed', digest)).to.equal(null);
      expect(await store.stat('staging', digest)).to.equal(null);
    });

    it('lists what each area holds', async () => {
      const one = Buffer.from('one');
      const two = Buffer.from('two');
      await store.putStaged(digestOf(one), one);
      await store.putStaged(digestOf(two), two);
      await store.commit(digestOf(two));
      const staged: string[] = [];
      for await (const d of store.list('staging')) staged.push(d.value);
      const committed: string[] = [];
      for await (const d of store.list('committed')) committed.push(d.value);
      expect(staged).to.deep.equal([digestOf(one).value]);
      expect(committed).to.deep.equal([digestOf(two).value]);
    });

    it('refuses upload ids that could name a path', async () => {
      for (const id of ['../../etc/passwd', '..', 'a/b', '']) {
        let failed = false;
        await store.openUploadWriter(id, 0).catch(() => (failed = true));
        expect(failed, id).to.equal(true);
      }
    });

    it('lists upload scratch files with their modification time', async () => {
      const id = randomUUID();
      await writeUpload(store, id, 0, Buffer.from('x'));
      const uploads = await store.listUploads();
      expect(uploads.map((u) => u.id)).to.deep.equal([id]);
      expect(Date.now() - uploads[0].modified.getTime()).to.be.lessThan(60_000);
      await store.deleteUpload(id);
    });

    it('leaves nothing behind after deletes', async () => {
      const id = randomUUID();
      await writeUpload(store, id, 0, Buffer.from('scratch'));
      await store.deleteUpload(id);
      const data = Buffer.from('content');
      await store.putStaged(digestOf(data), data);
      await store.commit(digestOf(data));
      await store.delete('committed', digestOf(data));
      expect(files()).to.deep.equal([]);
    });
  });
}

describe('filesystem BlobStore layout', () => {
  it('removes temp files a crash left at start-up, and leaves none when a write fails', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
    try {
      const store = new FsBlobStore(root);
      await store.init();
      writeFileSync(path.join(root, 'tmp', 'left-by-a-crash'), 'partial');
      await new FsBlobStore(root).init();
      expect(readdirSync(path.join(root, 'tmp'))).to.deep.equal([]);
      // A rename that fails (the target is a directory) must not strand its temp file.
      const data = Buffer.from('cannot land');
      const target = path.join(root, 'staging', 'sha256', digestOf(data).hex.slice(0, 2), digestOf(data).hex);
      mkdirSync(path.join(target, 'blocker'), { recursive: true });
      expect(await store.putStaged(digestOf(data), data).catch((e: NodeJS.ErrnoException) => e.code)).to.be.oneOf(['EISDIR', 'ENOTEMPTY', 'EEXIST']);
      expect(readdirSync(path.join(root, 'tmp'))).to.deep.equal([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  for (const fsync of [true, false]) {
    it(`leaves no bytes of an upload under 64 MiB in the page cache (fsync ${fsync ? 'on: buffered writes, dropped once flushed' : 'off: direct I/O'})`, async () => {
      await withFsStore({ fsync }, async (store, root) => {
        expect(store.uploadWrites).to.equal(fsync ? 'page cache' : 'direct');
        const id = randomUUID();
        const MiB = 1024 * 1024;
        const data = randomBytes(40 * MiB + 123); // past the background flushes (every 8 MiB buffered, 32 MiB direct)
        await writeUpload(store, id, 0, data.subarray(0, 8 * MiB)); // a PATCH, then the rest
        await writeUpload(store, id, 8 * MiB, data.subarray(8 * MiB));
        await store.syncUpload(id);
        // Under 64 KiB: a direct write leaves an unaligned tail to the ordinary descriptor.
        expect(cachedBytes(path.join(root, 'uploads', id))).to.be.below(64 * 1024);
        await expectStaged(store, id, data);
      });
    });
  }

  it('flushes an upload sent in chunks as it goes, past the end of the requests that wrote it', async () => {
    // No bytes kept cached: what each flush covered is dropped once it is flushed.
    await withFsStore({ cacheRecentBytes: 0 }, async (store, root) => {
      const id = randomUUID();
      const MiB = 1024 * 1024;
      const data = randomBytes(32 * MiB);
      // Four PATCHes of 8 MiB: none of them writes more than the 8 MiB a flush waits for.
      for (let part = 0; part < 4; part++) await writeUpload(store, id, part * 8 * MiB, data.subarray(part * 8 * MiB, (part + 1) * 8 * MiB));
      // No request waited for the flushes the later ones started; they end, and drop what they
      // covered, on their own (all but the last chunk, at least), before the upload is closed.
      const file = path.join(root, 'uploads', id);
      const deadline = Date.now() + 5000;
      while (cachedBytes(file) > 8 * MiB && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(cachedBytes(file)).to.be.at.most(8 * MiB);
      await store.syncUpload(id);
      expect(cachedBytes(file)).to.be.below(64 * 1024);
      await expectStaged(store, id, data);
    });
  });

  it('keeps the last bytes of large uploads cached within cacheRecentBytes, wherever they moved, and drops the oldest', async () => {
    const MiB = 1024 * 1024;
    await withFsStore({ cacheRecentBytes: 80 * MiB }, async (store, root) => {
      const staged = (data: Buffer) => path.join(root, 'staging', 'sha256', digestOf(data).hex.slice(0, 2), digestOf(data).hex);
      // The first promoted before it is flushed (flushContent flushes it where it moved), the second after.
      const first = randomBytes(72 * MiB);
      const firstId = randomUUID();
      await writeUpload(store, firstId, 0, first);
      await store.promoteUpload(firstId, digestOf(first), first.length, { flushed: false });
      await store.flushContent('staging', digestOf(first), firstId);
      // Its first read comes from the cache, but for the first parts its flushes dropped (before 16 MiB).
      expect(cachedBytes(staged(first))).to.be.at.least(56 * MiB);
      const second = randomBytes(72 * MiB);
      const secondId = randomUUID();
      await writeUpload(store, secondId, 0, second.subarray(0, 40 * MiB));
      await writeUpload(store, secondId, 40 * MiB, second.subarray(40 * MiB));
      // Flushed before it is staged, as the registry does: its background flushes are done by then.
      await store.syncUpload(secondId);
      await expectStaged(store, secondId, second);
      expect(cachedBytes(staged(second))).to.be.at.least(56 * MiB);
      // Over 112 MiB kept, 80 allowed: the first's oldest bytes went, through the descriptor taken
      // while it was an upload (it has moved since).
      expect(cachedBytes(staged(first))).to.be.at.most(24 * MiB);
    });
  });

  it('fails an upload for good once a background flush of it failed', async () => {
    await withFsStore({}, async (store, root) => {
      const id = randomUUID();
      const MiB = 1024 * 1024;
      await writeUpload(store, id, 0, randomBytes(MiB));
      // The upload's file becomes /dev/null, which takes every write and refuses fdatasync (EINVAL).
      const file = path.join(root, 'uploads', id);
      rmSync(file);
      symlinkSync('/dev/null', file);
      await writeUpload(store, id, MiB, randomBytes(9 * MiB)); // past 8 MiB: a background flush starts
      const code = (e: NodeJS.ErrnoException) => e.code;
      expect(await store.syncUpload(id).then(() => 'closed', code)).to.equal('EINVAL');
      // Not forgotten: the next chunk and the next attempt to close fail too.
      expect(await store.openUploadWriter(id, 10 * MiB).then(() => 'opened', code)).to.equal('EINVAL');
      expect(await store.syncUpload(id).then(() => 'closed', code)).to.equal('EINVAL');
      // Deleting the upload forgets it.
      await store.deleteUpload(id);
      await writeUpload(store, id, 0, randomBytes(MiB));
      await store.syncUpload(id);
    });
  });

  it('hands a promoted upload\'s background flushes to flushContent, which reports their failure', async () => {
    await withFsStore({}, async (store, root) => {
      const MiB = 1024 * 1024;
      const id = randomUUID();
      await writeUpload(store, id, 0, randomBytes(MiB));
      // /dev/null takes every write and refuses fdatasync (EINVAL): the background flush fails.
      const file = path.join(root, 'uploads', id);
      rmSync(file);
      symlinkSync('/dev/null', file);
      const data = randomBytes(9 * MiB);
      await writeUpload(store, id, MiB, data); // past 8 MiB: a background flush starts
      const digest = digestOf(data);
      await store.promoteUpload(id, digest, 10 * MiB, { flushed: false });
      const code = (e: NodeJS.ErrnoException) => e.code;
      expect(await store.flushContent('staging', digest, id).then(() => 'flushed', code)).to.equal('EINVAL');
    });
  });

  it('drops an unflushed promoted upload\'s bytes from the page cache once flushContent has flushed them', async () => {
    await withFsStore({}, async (store, root) => {
      const data = randomBytes(4 * 1024 * 1024);
      const id = randomUUID();
      await writeUpload(store, id, 0, data);
      const digest = digestOf(data);
      await store.promoteUpload(id, digest, data.length, { flushed: false });
      await store.flushContent('staging', digest, id);
      const file = path.join(root, 'staging', 'sha256', digest.hex.slice(0, 2), digest.hex);
      expect(cachedBytes(file)).to.be.below(64 * 1024);
      expect(await readAll((await store.open('staging', digest))!.stream)).to.deep.equal(data);
    });
  });

  it('makes every prefix directory of a new root at init, and starts on an existing root', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'blobstore-'));
    try {
      await new FsBlobStore(root).init();
      for (const area of ['staging', 'committed']) {
        for (const algorithm of ['sha256', 'sha512']) expect(readdirSync(path.join(root, area, algorithm))).to.have.length(256);
      }
      const again = new FsBlobStore(root);
      await again.init();
      const data = Buffer.from('after a restart');
      await again.putStaged(digestOf(data), data);
      await again.commit(digestOf(data));
      expect(listFiles(root)).to.deep.equal([path.join('committed', 'sha256', digestOf(data).hex.slice(0, 2), digestOf(data).hex)]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
