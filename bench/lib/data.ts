/**
 * Deterministic pseudo-random blob content, generated in 1 MiB chunks and streamed, so that
 * a 256 MiB blob never sits in memory. A blob is defined by a seed and a size: the same
 * (seed, size) always yields the same bytes, different seeds yield different bytes.
 *
 * Each chunk is a rotation of one shared 1 MiB base buffer (the rotation offset derived from
 * the seed and chunk index) with a 32-byte sha256(seed, index) stamped at its start; that
 * costs one memcpy per chunk and makes every chunk of every blob distinct.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const CHUNK_BYTES = MiB;

/** Differs on every run, so that content pushed by one run never equals another's. */
export const RUN_ID = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

let baseBuffer: Buffer | undefined;

/** 1 MiB of xorshift32 output from a fixed seed (created once). */
function base(): Buffer {
  if (baseBuffer) return baseBuffer;
  const words = new Uint32Array(CHUNK_BYTES / 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  baseBuffer = Buffer.from(words.buffer, words.byteOffset, words.byteLength);
  return baseBuffer;
}

export class PatternBlob {
  private digestValue: string | undefined;

  /** `seed` should already carry RUN_ID (see {@link blobSeed}). */
  constructor(
    readonly seed: string,
    readonly size: number,
  ) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad blob size ${size}`);
  }

  get chunkCount(): number {
    return Math.ceil(this.size / CHUNK_BYTES);
  }

  /** A fresh buffer with chunk `index` (CHUNK_BYTES long except possibly the last). */
  chunk(index: number): Buffer {
    const start = index * CHUNK_BYTES;
    if (index < 0 || start >= this.size) throw new RangeError(`chunk ${index} out of range`);
    const length = Math.min(CHUNK_BYTES, this.size - start);
    const stamp = createHash('sha256').update(`${this.seed}\0${index}`).digest();
    const rotation = stamp.readUInt32BE(0) % CHUNK_BYTES;
    const src = base();
    const out = Buffer.allocUnsafe(length);
    const firstPart = Math.min(length, CHUNK_BYTES - rotation);
    src.copy(out, 0, rotation, rotation + firstPart);
    if (firstPart < length) src.copy(out, firstPart, 0, length - firstPart);
    stamp.copy(out, 0, 0, Math.min(stamp.length, length));
    return out;
  }

  /** Buffers covering bytes [start, end) in order. */
  *chunks(start = 0, end = this.size): Generator<Buffer> {
    if (start < 0 || end > this.size || start > end) throw new RangeError(`bad range ${start}-${end} of ${this.size}`);
    let pos = start;
    while (pos < end) {
      const index = Math.floor(pos / CHUNK_BYTES);
      const chunkStart = index * CHUNK_BYTES;
      let buf = this.chunk(index);
      const from = pos - chunkStart;
      const to = Math.min(buf.length, end - chunkStart);
      if (from !== 0 || to !== buf.length) buf = buf.subarray(from, to);
      yield buf;
      pos += buf.length;
    }
  }

  /** Writes the whole blob into `target` (at least `size` bytes long) and returns the bytes written, as one buffer. */
  fill(target: Buffer): Buffer {
    if (target.length < this.size) throw new RangeError(`a ${target.length}-byte buffer cannot hold ${this.size} bytes`);
    let at = 0;
    for (const buf of this.chunks()) at += buf.copy(target, at);
    return target.subarray(0, this.size);
  }

  /** A byte stream of [start, end) that generates one chunk per read (honours backpressure). */
  stream(start = 0, end = this.size): Readable {
    const it = this.chunks(start, end);
    return new Readable({
      highWaterMark: CHUNK_BYTES,
      read() {
        const next = it.next();
        this.push(next.done ? null : next.value);
      },
    });
  }

  /** `sha256:<hex>` of the whole blob, computed by one pass over the generator (cached). */
  computeDigest(): string {
    if (this.digestValue === undefined) {
      const hash = createHash('sha256');
      for (const buf of this.chunks()) hash.update(buf);
      this.digestValue = `sha256:${hash.digest('hex')}`;
    }
    return this.digestValue;
  }

  get digest(): string {
    return this.computeDigest();
  }
}

/** A seed unique to this run and to `parts`. */
export function blobSeed(...parts: (string | number)[]): string {
  return [RUN_ID, ...parts].join('/');
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
