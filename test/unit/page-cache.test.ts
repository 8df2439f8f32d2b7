import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { canDropCache, dropPages, renameInto, syncPath, syncPathsNow } from '../../src/storage/page-cache.js';
import { syncByHandle, syncDirectory, syncFile } from '../../src/storage/sync-file.js';
import { cachedBytes } from '../helpers/page-cache.js';

const MiB = 1024 * 1024;

/** Dirty (not yet written back) kB of the whole system, from /proc/meminfo. */
function dirtyKiB(): number {
  const line = readFileSync('/proc/meminfo', 'utf8').split('\n').find((l) => l.startsWith('Dirty:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1]);
}

describe('page-cache addon (flushes in one job, renames that do not replace)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'page-cache-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is built by npm ci and loads', () => {
    // Without it the gateway falls back to O_DIRECT writes; CI must not test that by accident.
    expect(canDropCache).to.equal(true);
    expect(syncPath).to.be.a('function');
    expect(dropPages).to.be.a('function');
  });

  it('flushes a file before dropping it: written, not yet flushed bytes leave the cache', async () => {
    const file = path.join(dir, 'f');
    const handle = await open(file, 'w');
    try {
      await handle.write(randomBytes(8 * MiB), 0, 8 * MiB, 0);
    } finally {
      await handle.close();
    }
    expect(cachedBytes(file)).to.equal(8 * MiB);
    // Dirty pages cannot be dropped: only a flush first lets them go.
    expect(await syncPath!(file, false, 0, 0)).to.equal(true);
    expect(cachedBytes(file)).to.equal(0);
  });

  it('drops only the range asked for, and nothing with a drop length of -1', async () => {
    const file = path.join(dir, 'f');
    writeFileSync(file, randomBytes(8 * MiB));
    expect(await syncPath!(file, false, 0, -1)).to.equal(true);
    expect(cachedBytes(file)).to.equal(8 * MiB);
    // The cache may hold the file in large folios (up to 2 MiB here), which go whole or not at
    // all: a range on 4 MiB boundaries drops exactly.
    await syncPath!(file, false, 0, 4 * MiB);
    expect(cachedBytes(file)).to.equal(4 * MiB);
  });

  it('drops a range of an open descriptor\'s file (dropPages), whatever its path is now, and takes no malformed call', async () => {
    const file = path.join(dir, 'f');
    writeFileSync(file, randomBytes(8 * MiB));
    expect(await syncFile(file)).to.equal(true);
    const handle = await open(file, 'r');
    try {
      renameSync(file, path.join(dir, 'g'));
      expect(await dropPages!(handle.fd, 4 * MiB, 0)).to.equal(true); // from 4 MiB to the end
      expect(cachedBytes(path.join(dir, 'g'))).to.equal(4 * MiB);
      expect(() => dropPages!(handle.fd, -1, 0)).to.throw(TypeError);
      expect(() => (dropPages as unknown as (fd: string) => unknown)('3')).to.throw(TypeError);
    } finally {
      await handle.close();
    }
  });

  it('flushes what it was given: the system-wide dirty bytes fall by the file', async function () {
    this.retries(2); // other writers on the machine move the system-wide figure
    const file = path.join(dir, 'f');
    writeFileSync(file, randomBytes(64 * MiB));
    const before = dirtyKiB();
    await syncFile(file);
    expect(before - dirtyKiB()).to.be.greaterThan(32 * 1024);
  });

  it('answers false for a missing file, and a directory sync of a missing directory fails with ENOENT', async () => {
    expect(await syncFile(path.join(dir, 'missing'))).to.equal(false);
    expect(await syncByHandle(path.join(dir, 'missing'), false)).to.equal(false);
    const err = await syncDirectory(path.join(dir, 'missing')).catch((e: NodeJS.ErrnoException) => e);
    expect(err).to.be.instanceOf(Error).with.property('code', 'ENOENT');
  });

  it('fails as fs.promises does, with code, syscall and path', async () => {
    // /dev/null refuses fdatasync (EINVAL); a file is not a directory (ENOTDIR).
    const refused = await syncFile('/dev/null').catch((e: NodeJS.ErrnoException) => e);
    expect(refused).to.be.instanceOf(Error).that.includes({ code: 'EINVAL', syscall: 'fdatasync', path: '/dev/null' });
    const file = path.join(dir, 'f');
    writeFileSync(file, 'x');
    const notDir = await syncDirectory(file).catch((e: NodeJS.ErrnoException) => e);
    expect(notDir).to.be.instanceOf(Error).that.includes({ code: 'ENOTDIR', syscall: 'open', path: file });
    expect((notDir as Error).message).to.match(/^ENOTDIR: .*open '.*\/f'$/);
  });

  it('syncs a directory, and takes no malformed call', async () => {
    mkdirSync(path.join(dir, 'd'));
    await syncDirectory(path.join(dir, 'd'));
    expect(await syncByHandle(path.join(dir, 'd'), true)).to.equal(true);
    const addon = syncPath as (...args: unknown[]) => Promise<boolean>;
    expect(() => addon('', false, 0, -1)).to.throw(TypeError);
    expect(() => addon('a\0b', false, 0, -1)).to.throw(TypeError, /NUL/);
    expect(() => addon(path.join(dir, 'f'), false, -1, 0)).to.throw(TypeError);
    expect(() => addon(path.join(dir, 'f'), 'yes', 0, 0)).to.throw(TypeError);
  });

  it('flushes a list of files on several threads, blocking, failing with code, syscall and path, and takes no malformed call', () => {
    const flush = syncPathsNow as (...args: unknown[]) => number;
    const files = Array.from({ length: 12 }, (_, i) => path.join(dir, `f${i}`));
    for (const f of files) writeFileSync(f, randomBytes(64 * 1024));
    expect(flush([...files, path.join(dir, 'missing')], 4)).to.equal(12);
    expect(flush(files, 64)).to.equal(12);
    const err = (() => {
      try {
        flush([files[0], '/dev/null', files[1]], 2);
      } catch (e) {
        return e as NodeJS.ErrnoException;
      }
      return null;
    })();
    expect(err).to.include({ code: 'EINVAL', syscall: 'fdatasync', path: '/dev/null' });
    expect(() => flush(files, 0)).to.throw(TypeError);
    expect(() => flush(files, 65)).to.throw(TypeError);
    expect(() => flush('a', 1)).to.throw(TypeError);
    expect(() => flush([files[0], 7], 1)).to.throw(TypeError);
    expect(() => flush(['a\0b'], 1)).to.throw(TypeError, /NUL/);
  });

  it('renames into place only where nothing is, and says what it found', async () => {
    const rename = renameInto as NonNullable<typeof renameInto>;
    mkdirSync(path.join(dir, 'd'));
    const [source, target] = [path.join(dir, 'upload'), path.join(dir, 'd', 'blob')];
    writeFileSync(source, 'first');
    expect(await rename(source, target, true)).to.equal('renamed');
    expect(readFileSync(target, 'utf8')).to.equal('first');
    expect(existsSync(source)).to.equal(false);
    writeFileSync(source, 'second');
    expect(await rename(source, target, false)).to.equal('exists');
    expect(readFileSync(target, 'utf8')).to.equal('first');
    expect(readFileSync(source, 'utf8')).to.equal('second');
    expect(await rename(path.join(dir, 'none'), path.join(dir, 'd', 'other'), true)).to.equal('missing');
    const err = await rename(source, path.join(dir, 'd', 'blob', 'under-a-file'), true).catch((e: NodeJS.ErrnoException) => e);
    expect(err).to.be.instanceOf(Error).that.includes({ code: 'ENOTDIR', syscall: 'rename' });
    expect(() => (rename as (...args: unknown[]) => unknown)(source, '', true)).to.throw(TypeError);
    expect(() => (rename as (...args: unknown[]) => unknown)(source, target)).to.throw(TypeError);
  });

  it('flushes through fs.promises where the addon is not built', async () => {
    const file = path.join(dir, 'f');
    writeFileSync(file, randomBytes(MiB));
    expect(await syncByHandle(file, false)).to.equal(true);
    expect(await syncByHandle('/dev/null', false).catch((e: NodeJS.ErrnoException) => e.code)).to.equal('EINVAL');
  });
});
