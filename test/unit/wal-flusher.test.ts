/** WalFlusher: group commit of the embedded database's log, and what a failed flush does. */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WalFlusher } from '../../src/db/pglite-durable.js';

describe('WalFlusher', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'wal-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('has nothing to do before anything is written, and flushes each written segment once per flush', async () => {
    const wal = new WalFlusher();
    await wal.flush();
    expect(wal.syncs).to.equal(0);
    const [a, b] = ['000000010000000000000001', '000000010000000000000002'].map((name) => path.join(dir, name));
    for (const file of [a, b]) writeFileSync(file, 'log');
    wal.written(a);
    wal.written(a);
    wal.written(b);
    await wal.flush();
    expect(wal.syncs).to.equal(2);
    await wal.flush();
    expect(wal.syncs).to.equal(2);
  });

  it('serves every caller that comes during a flush with one more flush after it', async () => {
    const wal = new WalFlusher();
    const file = path.join(dir, 'segment');
    writeFileSync(file, 'log');
    wal.written(file);
    const first = wal.flush();
    wal.written(file);
    const waiting = [wal.flush(), wal.flush(), wal.flush()];
    expect(waiting[0]).to.equal(waiting[1]);
    await Promise.all([first, ...waiting]);
    expect(wal.syncs).to.equal(2);
  });

  it('skips a segment recycled meanwhile, and flushes blocking when PostgreSQL syncs its own files', async () => {
    const wal = new WalFlusher();
    wal.written(path.join(dir, 'gone'));
    await wal.flush();
    expect(wal.syncs).to.equal(0);
    const file = path.join(dir, 'segment');
    writeFileSync(file, 'log');
    wal.written(file);
    wal.flushNow();
    expect(wal.syncs).to.equal(1);
    await wal.flush();
    expect(wal.syncs).to.equal(1);
  });

  it("flushes a running flush's segments once when PostgreSQL syncs its files meanwhile, not once per file", async () => {
    const wal = new WalFlusher();
    const file = path.join(dir, 'segment');
    writeFileSync(file, 'log');
    wal.written(file);
    const running = wal.flush(); // its flush waits on the thread pool while the checkpoint runs
    wal.flushNow();
    wal.flushNow();
    wal.flushNow();
    expect(wal.syncs).to.equal(1);
    await running;
    expect(wal.syncs).to.equal(2);
  });

  it('fails every later flush once one failed: no commit is acknowledged after a lost write', async () => {
    const wal = new WalFlusher();
    wal.written('/dev/null'); // takes writes, refuses fdatasync (EINVAL)
    const first = await wal.flush().then(() => null, (e: Error) => e);
    expect(first?.message).to.match(/write-ahead log failed: .*EINVAL/);
    expect(wal.failure).to.equal(first);
    const later = await wal.flush().then(() => null, (e: Error) => e);
    expect(later).to.equal(first);
  });
});
