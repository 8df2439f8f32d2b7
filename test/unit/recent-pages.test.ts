import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RecentPages, type RecentPagesOptions } from '../../src/storage/recent-pages.js';
import { syncFile } from '../../src/storage/sync-file.js';
import { cachedBytes } from '../helpers/page-cache.js';

const MiB = 1024 * 1024;

describe('RecentPages (the last flushed bytes of large uploads kept cached within a budget)', () => {
  let dir: string;
  let pages: RecentPages;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'recent-pages-'));
  });
  afterEach(async () => {
    await pages?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const use = (options: Partial<RecentPagesOptions>) => (pages = new RecentPages({ budget: 8 * MiB, maxFiles: 64, keepFrom: 0, keepWholeFrom: 0, ...options }));

  /** A file of `mib` MiB, written through the page cache and flushed, as an upload's flush leaves it: all cached, all clean. */
  async function flushedFile(name: string, mib: number): Promise<string> {
    const file = path.join(dir, name);
    writeFileSync(file, randomBytes(mib * MiB));
    expect(await syncFile(file)).to.equal(true);
    expect(cachedBytes(file)).to.equal(mib * MiB);
    return file;
  }

  /** Reports all of `file` (`mib` MiB) kept, as one part, and no more to come. */
  async function keptWhole(file: string, mib: number): Promise<void> {
    await pages.flushed(file, 0, mib * MiB);
    await pages.finished(file, true);
  }

  it('keeps flushed parts up to the budget and drops the oldest past it, closing a whole file once all its parts are gone', async () => {
    use({ budget: 8 * MiB });
    const [a, b, c] = [await flushedFile('a', 4), await flushedFile('b', 4), await flushedFile('c', 4)];
    await keptWhole(a, 4);
    await keptWhole(b, 4);
    expect(pages.keptBytes).to.equal(8 * MiB);
    expect([cachedBytes(a), cachedBytes(b)]).to.deep.equal([4 * MiB, 4 * MiB]);
    // The third comes in two parts. The first makes 10 MiB: over the budget of 8, the oldest
    // part (all of a) goes; the second makes 8 again, and nothing more goes.
    await pages.flushed(c, 0, 2 * MiB);
    expect([cachedBytes(a), cachedBytes(b)]).to.deep.equal([0, 4 * MiB]);
    await pages.flushed(c, 2 * MiB, 4 * MiB);
    expect([cachedBytes(b), cachedBytes(c)]).to.deep.equal([4 * MiB, 4 * MiB]);
    expect(pages.keptBytes).to.equal(8 * MiB);
    // a's descriptor is closed; b's stays for its part, c's as it may report more.
    expect(pages.openFiles).to.equal(2);
  });

  it('drops a file that moved since its parts were kept, through the descriptor taken when it was first reported', async () => {
    use({ budget: 4 * MiB });
    const a = await flushedFile('a', 4);
    await keptWhole(a, 4);
    const moved = path.join(dir, 'a-moved');
    renameSync(a, moved);
    const b = await flushedFile('b', 4);
    await pages.flushed(b, 0, 4 * MiB);
    expect(cachedBytes(moved)).to.equal(0);
    expect(cachedBytes(b)).to.equal(4 * MiB);
  });

  it('follows a file renamed while it reports parts (moved), and counts each byte once', async () => {
    use({ budget: 8 * MiB });
    const a = await flushedFile('a', 6);
    await pages.flushed(a, 0, 2 * MiB);
    const moved = path.join(dir, 'a-moved');
    renameSync(a, moved);
    pages.moved(a, moved);
    await pages.flushed(moved, 0, 6 * MiB); // what was reported before is not counted again
    await pages.finished(moved, true);
    expect(pages.keptBytes).to.equal(6 * MiB);
    expect(pages.openFiles).to.equal(1);
  });

  it('says which flushes keep what they flushed and which uploads stay cached once whole, and none without a budget', () => {
    use({ budget: 64 * MiB, keepFrom: 16 * MiB, keepWholeFrom: 64 * MiB });
    expect([pages.keeps(8 * MiB), pages.keeps(16 * MiB)]).to.deep.equal([false, true]);
    expect([pages.keepsWhole(32 * MiB), pages.keepsWhole(64 * MiB)]).to.deep.equal([false, true]);
    use({ budget: 0, keepFrom: 16 * MiB, keepWholeFrom: 64 * MiB });
    expect([pages.keeps(256 * MiB), pages.keepsWhole(256 * MiB)]).to.deep.equal([false, false]);
  });

  it('lets go of the parts of an upload that is not kept whole (its last flush dropped them) and closes it', async () => {
    use({ budget: 64 * MiB });
    const a = await flushedFile('a', 4);
    await pages.flushed(a, 0, 2 * MiB);
    expect(pages.openFiles).to.equal(1);
    await pages.finished(a, false);
    expect(pages.keptBytes).to.equal(0);
    expect(pages.openFiles).to.equal(0);
  });

  it('holds descriptors for at most maxFiles files, dropping the oldest files\' parts to stay there', async () => {
    use({ budget: 64 * MiB, maxFiles: 2 });
    const files = [await flushedFile('a', 2), await flushedFile('b', 2), await flushedFile('c', 2)];
    for (const file of files) await keptWhole(file, 2);
    expect(pages.openFiles).to.equal(2);
    expect(files.map(cachedBytes)).to.deep.equal([0, 2 * MiB, 2 * MiB]);
  });

  it('forgets a file being deleted: its bytes no longer count, and its descriptor does not hold its space', async () => {
    use({ budget: 8 * MiB });
    const a = await flushedFile('a', 4);
    await pages.flushed(a, 0, 4 * MiB);
    await pages.forget(a);
    expect(pages.keptBytes).to.equal(0);
    expect(pages.openFiles).to.equal(0);
    rmSync(a);
    // The part left in the queue is skipped when its turn comes.
    const b = await flushedFile('b', 8);
    await pages.flushed(b, 0, 8 * MiB);
    expect(pages.keptBytes).to.equal(8 * MiB);
    expect(cachedBytes(b)).to.equal(8 * MiB);
  });

  it('never fails: a missing file is not kept, and close lets every descriptor go and keeps what is cached', async () => {
    use({ budget: 8 * MiB });
    await pages.flushed(path.join(dir, 'missing'), 0, MiB);
    await pages.finished(path.join(dir, 'missing'), true);
    expect(existsSync(path.join(dir, 'missing'))).to.equal(false);
    expect(pages.keptBytes).to.equal(0);
    const a = await flushedFile('a', 2);
    await pages.flushed(a, 0, 2 * MiB);
    await pages.close();
    expect(pages.openFiles).to.equal(0);
    expect(cachedBytes(a)).to.equal(2 * MiB);
  });
});
