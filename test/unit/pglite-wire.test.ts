/**
 * The reader of PGlite's wire-protocol replies, on bytes built here: messages split across
 * the chunks PGlite hands over, NULL and empty values, and errors with their fields.
 */
import { expect } from 'chai';
import { readReply, ReplyCollector } from '../../src/db/pglite-wire.js';

function message(code: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.write(code, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
const int16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const cstring = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
const value = (v: string | null) => (v === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(v)), Buffer.from(v, 'utf8')]));
const field = (name: string, type: number) => Buffer.concat([cstring(name), int32(0), int16(0), int32(type), int16(-1), int32(-1), int16(0)]);

describe('PGlite wire replies', () => {
  const description = message('T', int16(2), field('név', 25), field('n', 23));
  const row = (a: string | null, b: string | null) => message('D', int16(2), value(a), value(b));
  const done = Buffer.concat([message('C', cstring('SELECT 2')), message('Z', Buffer.from('I'))]);

  it('reads fields, rows with NULL apart from empty, and parameter types', () => {
    const reply = readReply(Buffer.concat([message('1'), message('t', int16(2), int32(25), int32(20)), description, row('ünï', '1'), row('', null), done]));
    expect(reply.fields).to.deep.equal([
      { name: 'név', type: 25 },
      { name: 'n', type: 23 },
    ]);
    expect(reply.rows).to.deep.equal([
      ['ünï', '1'],
      ['', null],
    ]);
    expect(reply.paramTypes).to.deep.equal([25, 20]);
    expect(reply.error).to.equal(null);
  });

  it('joins chunks that split messages anywhere, and copies them (PGlite reuses its memory)', () => {
    const whole = Buffer.concat([description, row('a', '2'), row('b', '3'), done]);
    for (const cut of [1, 3, 5, 17, whole.length - 1]) {
      const collector = new ReplyCollector();
      const reused = new Uint8Array(whole.length);
      reused.set(whole.subarray(0, cut));
      collector.onRawData(reused.subarray(0, cut));
      reused.fill(0);
      reused.set(whole.subarray(cut), 0);
      collector.onRawData(reused.subarray(0, whole.length - cut));
      expect(collector.reply().rows, `cut at ${cut}`).to.deep.equal([
        ['a', '2'],
        ['b', '3'],
      ]);
    }
  });

  it('keeps only the rows after the last row description', () => {
    const reply = readReply(Buffer.concat([description, row('old', '1'), done, description, row('new', '2'), done]));
    expect(reply.rows).to.deep.equal([['new', '2']]);
  });

  it('turns an error response into a DatabaseError with its fields, the first when there are several', () => {
    const error = (code: string, text: string) =>
      message('E', Buffer.concat([cstring('SERROR'), cstring(`C${code}`), cstring(`M${text}`), cstring('DKey (id)=(1) already exists.'), cstring('nt_pkey'), cstring('tt'), Buffer.from([0])]));
    const reply = readReply(Buffer.concat([error('23505', 'duplicate key'), error('25P02', 'aborted'), done]));
    expect(reply.error).to.be.instanceOf(Error);
    expect(reply.error).to.include({ message: 'duplicate key', code: '23505', severity: 'ERROR', detail: 'Key (id)=(1) already exists.', constraint: 't_pkey', table: 't' });
  });

  it('refuses a truncated message instead of reading past it', () => {
    const bytes = Buffer.concat([description, row('a', '1')]);
    expect(() => readReply(bytes.subarray(0, bytes.length - 2))).to.throw(/truncated message \('D'\)/);
  });
});
