/**
 * DurableNodeFS's hooks on a stand-in for PGlite's Emscripten module: which files a
 * checkpoint's flushes are gathered for, that the gathered flushes are made before anything
 * else is written or flushed, and what a failed one does. (test/integration/database.test.ts
 * runs the same with PostgreSQL's own checkpoint.)
 */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, openSync, closeSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DurableNodeFS, fileKind, syncFilesInTurn, syncFilesNow, WalFlusher } from '../../src/db/pglite-durable.js';

interface Stream {
  node: { file: string };
  nfd: number;
}

class ErrnoError {
  constructor(readonly errno: number) {}
}

/** The parts of the Emscripten module the hooks use; `calls` records what reached the "file system". */
function standIn(files: DurableNodeFS) {
  const calls: string[] = [];
  const nodefs = {
    realPath: (node: { file: string }) => node.file,
    stream_ops: {
      write(stream: Stream): number {
        calls.push(`write ${path.basename(stream.node.file)} after ${files.gatheredBatches} batches`);
        return 1;
      },
      fsync: undefined as ((stream: Stream) => number) | undefined,
    },
  };
  files.hook({ NODEFS: nodefs, FS: { ErrnoError } });
  return {
    calls,
    write: (stream: Stream) => nodefs.stream_ops.write(stream),
    fsync: (stream: Stream) => nodefs.stream_ops.fsync!(stream),
  };
}

describe('DurableNodeFS (flushes of the embedded database)', () => {
  let root: string;
  let opened: number[];
  /** A file under the data directory, created, with an open descriptor as PostgreSQL would hold. */
  const file = (relative: string, target?: string): Stream => {
    const full = path.join(root, relative);
    mkdirSync(path.dirname(full), { recursive: true });
    if (target) symlinkSync(target, full);
    else writeFileSync(full, 'page');
    const nfd = openSync(full, 'r');
    opened.push(nfd);
    return { node: { file: full }, nfd };
  };
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'durable-fs-'));
    opened = [];
  });
  afterEach(() => {
    for (const fd of opened) closeSync(fd);
    rmSync(root, { recursive: true, force: true });
  });

  it('tells the log, data files (tables, indexes, their forks, the commit log) and everything else apart', () => {
    const kinds = Object.fromEntries(
      [
        'pg_wal/000000010000000000000001',
        'pg_wal/xlogtemp.42',
        'base/5/16384',
        'base/5/16384_fsm',
        'base/5/16384_vm',
        'base/5/16384.1',
        'global/1262',
        'pg_xact/0000',
        'pg_multixact/offsets/0000',
        'global/pg_control',
        'global/pg_filenode.map',
        'base/5/pg_filenode.map',
        'pg_logical/replorigin_checkpoint',
        'base/5',
        'pg_xact',
      ].map((p) => [p, fileKind(p)]),
    );
    expect(kinds).to.deep.equal({
      'pg_wal/000000010000000000000001': 'log',
      'pg_wal/xlogtemp.42': 'log',
      'base/5/16384': 'data',
      'base/5/16384_fsm': 'data',
      'base/5/16384_vm': 'data',
      'base/5/16384.1': 'data',
      'global/1262': 'data',
      'pg_xact/0000': 'data',
      'pg_multixact/offsets/0000': 'data',
      'global/pg_control': 'other',
      'global/pg_filenode.map': 'other',
      'base/5/pg_filenode.map': 'other',
      'pg_logical/replorigin_checkpoint': 'other',
      'base/5': 'other',
      'pg_xact': 'other',
    });
  });

  it('flushes a data file at once outside a checkpoint that housekeeping runs', () => {
    const files = new DurableNodeFS(root, new WalFlusher());
    const { fsync } = standIn(files);
    expect(fsync(file('base/5/16384'))).to.equal(0);
    expect(files.wal.fileSyncs).to.equal(1);
    expect(files.gatheredBatches).to.equal(0);
  });

  it('gathers data-file flushes in a checkpoint and makes them, after the log, before pg_control is written', async () => {
    const wal = new WalFlusher();
    const files = new DurableNodeFS(root, wal);
    const { calls, write, fsync } = standIn(files);
    const [table, index, clog, log, control] = ['base/5/16384', 'base/5/16385', 'pg_xact/0000', 'pg_wal/000000010000000000000001', 'global/pg_control'].map((p) => file(p));
    await files.gatheringFlushes(async () => {
      write(log!);
      for (const stream of [table!, index!, clog!, table!]) expect(fsync(stream)).to.equal(0);
      write(table!); // the log and data files do not end the gathering
      expect(files.gatheredBatches).to.equal(0);
      expect(wal.fileSyncs).to.equal(0);
      expect(wal.syncs).to.equal(0);
      write(control!);
      expect(calls.at(-1)).to.equal('write pg_control after 1 batches');
      expect(files.gatheredFiles).to.equal(3);
      expect(wal.syncs, 'the log first').to.equal(1);
      expect(wal.fileSyncs).to.equal(3);
      fsync(control!);
      expect(wal.fileSyncs).to.equal(4);
    });
    expect(files.gatheredBatches).to.equal(1);
    // Outside the checkpoint: at once again.
    fsync(table!);
    expect(wal.fileSyncs).to.equal(5);
  });

  it("flushes the gathered files before any other file's flush, and what is left when the checkpoint ends", async () => {
    const files = new DurableNodeFS(root, new WalFlusher());
    const { fsync } = standIn(files);
    const [table, index, origin] = ['base/5/16384', 'base/5/16385', 'pg_logical/replorigin_checkpoint'].map((p) => file(p));
    await files.gatheringFlushes(async () => {
      fsync(table!);
      fsync(origin!);
      expect(files.gatheredBatches).to.equal(1);
      expect(files.wal.fileSyncs).to.equal(2);
      fsync(index!);
      expect(files.gatheredBatches).to.equal(1);
    });
    expect(files.gatheredBatches).to.equal(2);
    expect(files.gatheredFiles).to.equal(2);
  });

  it('answers a failed gathered flush with EIO before the write that needed it, and acknowledges no commit after one at the end', async () => {
    const wal = new WalFlusher();
    const files = new DurableNodeFS(root, wal);
    const { calls, write, fsync } = standIn(files);
    const broken = file('base/5/16384', '/dev/null'); // takes writes, refuses fdatasync (EINVAL)
    const control = file('global/pg_control');
    await files.gatheringFlushes(async () => {
      fsync(broken);
      expect(() => write(control)).to.throw(ErrnoError).with.property('errno', 29);
      expect(calls).to.deep.equal([]);
    });
    expect(wal.failure).to.equal(null); // PostgreSQL PANICs on the EIO itself
    const failed = await files
      .gatheringFlushes(async () => void fsync(broken))
      .then(() => null, (e: Error) => e);
    expect(failed?.message).to.match(/data files after a checkpoint failed: .*EINVAL/);
    expect(wal.failure).to.equal(failed);
    expect(await wal.flush().then(() => null, (e: Error) => e)).to.equal(failed);
  });

  it('flushes the data files written since the last time, off the event loop, once each', async () => {
    const files = new DurableNodeFS(root, new WalFlusher());
    const { write } = standIn(files);
    const [table, index, log, control] = ['base/5/16384', 'base/5/16385', 'pg_wal/000000010000000000000001', 'global/pg_control'].map((p) => file(p));
    for (const stream of [table!, index!, table!, log!, control!]) write(stream);
    rmSync(index!.node.file); // dropped meanwhile: nothing to flush
    expect(await files.flushWrittenData()).to.equal(1);
    expect(await files.flushWrittenData()).to.equal(0);
    write(index!);
    write(table!);
    expect(await files.flushWrittenData(1)).to.equal(1);
  });

  for (const [name, flush] of [
    ['on several threads (the addon)', syncFilesNow],
    ['one after the other (without the addon)', syncFilesInTurn],
  ] as const) {
    it(`flushes a list of files ${name}, skipping missing ones and failing as fs does`, () => {
      const paths = Array.from({ length: 20 }, (_, i) => path.join(root, `f${i}`));
      for (const p of paths) writeFileSync(p, 'x');
      expect(flush([...paths, path.join(root, 'missing')])).to.equal(20);
      expect(flush([])).to.equal(0);
      const err = (() => {
        try {
          flush([paths[0]!, '/dev/null']);
          return null;
        } catch (e) {
          return e as NodeJS.ErrnoException;
        }
      })();
      expect(err?.code).to.equal('EINVAL');
      expect(err?.syscall).to.equal('fdatasync');
    });
  }
});
