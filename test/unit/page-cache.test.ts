import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { canDropCache, dropCache } from '../../src/storage/page-cache.js';
import { cachedBytes } from '../helpers/page-cache.js';

describe('page-cache addon (posix_fadvise DONTNEED)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'page-cache-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is built by npm ci and loads', () => {
    // Without it the gateway falls back to O_DIRECT writes; CI must not test that by accident.
    expect(canDropCache).to.equal(true);
  });

  it('drops a flushed range of a file from the page cache, and only that range', async () => {
    const MiB = 1024 * 1024;
    const handle = await open(path.join(dir, 'f'), 'w+');
    try {
      await handle.write(randomBytes(8 * MiB), 0, 8 * MiB, 0);
      await handle.datasync();
      expect(cachedBytes(path.join(dir, 'f'))).to.equal(8 * MiB);
      // The cache may hold the file in large folios (up to 2 MiB here), which go whole or not at
      // all: a range on 4 MiB boundaries drops exactly.
      await dropCache(handle.fd, 0, 4 * MiB);
      expect(cachedBytes(path.join(dir, 'f'))).to.equal(4 * MiB);
      await dropCache(handle.fd); // offset 0, length 0: the whole file
      expect(cachedBytes(path.join(dir, 'f'))).to.equal(0);
    } finally {
      await handle.close();
    }
  });

  it('never fails: a descriptor that is not a file is left as it is', async () => {
    await dropCache(1_000_000); // EBADF from the kernel, ignored
    const handle = await open('/dev/null', 'r');
    try {
      await dropCache(handle.fd, 0, 10);
    } finally {
      await handle.close();
    }
  });
});
