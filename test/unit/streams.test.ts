/** Stream and buffer helpers of the registry core. */
import { expect } from 'chai';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ByteMeter, ownMemory } from '../../src/registry/streams.js';

describe('registry stream helpers', () => {
  it('ownMemory copies a slice of a larger ArrayBuffer (Node\'s pool) into memory of its own, and keeps a Buffer that owns its memory', () => {
    const pooled = Buffer.concat([Buffer.from('{"schemaVersion":'), Buffer.from('2}')]);
    expect(pooled.buffer.byteLength).to.be.greaterThan(pooled.length); // a slice of the 8 KiB pool
    const own = ownMemory(pooled);
    expect(own.equals(pooled)).to.equal(true);
    expect(own.buffer.byteLength).to.equal(own.length);
    expect(own.buffer).to.not.equal(pooled.buffer);
    const whole = Buffer.allocUnsafeSlow(16).fill(7);
    expect(ownMemory(whole)).to.equal(whole);
  });

  it('ByteMeter counts what passes, keeps it only when asked, and stops past its limit', async () => {
    const chunks = [Buffer.from('abc'), Buffer.from('defg')];
    const received: Buffer[] = [];
    const sink = () => new Writable({ write: (c: Buffer, _e, cb) => (received.push(c), cb()) });
    const keeping = new ByteMeter(0, true);
    await pipeline(Readable.from(chunks), keeping, sink());
    expect(keeping.bytes).to.equal(7);
    expect(keeping.kept()?.toString()).to.equal('abcdefg');
    expect(Buffer.concat(received).toString()).to.equal('abcdefg');
    const counting = new ByteMeter(0);
    await pipeline(Readable.from(chunks), counting, sink());
    expect(counting.kept()).to.equal(null);
    const limited = new ByteMeter(5);
    const err = await pipeline(Readable.from(chunks), limited, sink()).then(() => null, (e: Error) => e);
    expect(err?.message).to.match(/exceeds the limit of 5 bytes/);
  });

  it('ByteMeter awaits its space check after each `every` bytes, and fails the stream when the check fails', async () => {
    const chunks = Array.from({ length: 10 }, () => Buffer.alloc(1024, 'x'));
    const sink = () => new Writable({ write: (_c: Buffer, _e, cb) => cb() });
    const seenAt: number[] = [];
    const meter: ByteMeter = new ByteMeter(0, false, { every: 3 * 1024, check: async () => void seenAt.push(meter.bytes) });
    await pipeline(Readable.from(chunks), meter, sink());
    expect(seenAt).to.deep.equal([3072, 6144, 9216]);
    let calls = 0;
    const full = new ByteMeter(0, false, { every: 2048, check: async () => { if (++calls === 2) throw new Error('out of space'); } });
    const received: Buffer[] = [];
    const err = await pipeline(Readable.from(chunks), full, new Writable({ write: (c: Buffer, _e, cb) => (received.push(c), cb()) })).then(() => null, (e: Error) => e);
    expect(err?.message).to.equal('out of space');
    expect(Buffer.concat(received).length).to.be.at.most(3 * 1024);
  });
});
