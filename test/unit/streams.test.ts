/** Stream and buffer helpers of the registry core. */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
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

  it('ByteMeter counts and hashes what passes, keeps it only when asked, and stops past its limit', async () => {
    const chunks = [Buffer.from('abc'), Buffer.from('defg')];
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    const hash = createHash('sha256');
    const keeping = new ByteMeter(hash, 0, true);
    await pipeline(Readable.from(chunks), keeping, sink());
    expect(keeping.bytes).to.equal(7);
    expect(keeping.kept()?.toString()).to.equal('abcdefg');
    expect(hash.digest('hex')).to.equal(createHash('sha256').update('abcdefg').digest('hex'));
    const counting = new ByteMeter(null, 0);
    await pipeline(Readable.from(chunks), counting, sink());
    expect(counting.kept()).to.equal(null);
    const limited = new ByteMeter(null, 5);
    const err = await pipeline(Readable.from(chunks), limited, sink()).then(() => null, (e: Error) => e);
    expect(err?.message).to.match(/exceeds the limit of 5 bytes/);
  });
});
