import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { RegistryError } from './errors.js';
import type { DigestAlgorithm } from './names.js';

/**
 * Counts bytes and stops the stream past `limit` bytes (0 = no limit); with `keep`, also
 * keeps the bytes (for small content only). (An upload's digest is fed by the store's writer.)
 */
export class ByteMeter extends Transform {
  bytes = 0;
  private readonly chunks: Buffer[] | null;
  private nextCheck: number;
  /**
   * `limit`: most bytes that may pass (0 = any); `keep`: keep what passed; `spaceCheck`: awaited
   * after each `every` bytes (a failure fails the stream).
   */
  constructor(
    private readonly limit: number,
    keep = false,
    private readonly spaceCheck?: { every: number; check: () => Promise<void> },
  ) {
    super();
    this.chunks = keep ? [] : null;
    this.nextCheck = spaceCheck?.every ?? 0;
  }

  /** The bytes that passed, when kept. */
  kept(): Buffer | null {
    return this.chunks && Buffer.concat(this.chunks);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.limit > 0 && this.bytes > this.limit) {
      callback(overLimit(this.limit));
      return;
    }
    this.chunks?.push(chunk);
    const { spaceCheck } = this;
    if (!spaceCheck || this.bytes < this.nextCheck) {
      callback(null, chunk);
      return;
    }
    this.nextCheck = this.bytes + spaceCheck.every;
    spaceCheck.check().then(() => callback(null, chunk), callback);
  }
}

/** Content past a limit of `limit` bytes (413). */
export function overLimit(limit: number): RegistryError {
  return new RegistryError('SIZE_INVALID', `content exceeds the limit of ${limit} bytes`, { status: 413 });
}

/** Digest of a stream, read to its end. */
export async function digestStream(
  source: AsyncIterable<Buffer>,
  algorithm: DigestAlgorithm,
): Promise<{ hex: string; size: number }> {
  const hash = createHash(algorithm);
  let size = 0;
  for await (const chunk of source) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { hex: hash.digest('hex'), size };
}

/** Every byte of a (small) stream. */
export async function readAll(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * `buffer`, or a copy of it in an ArrayBuffer of its own size when it is a view on a larger
 * one (for Buffers kept long: a small Buffer is usually a slice of Node's shared 8 KiB pool).
 */
export function ownMemory(buffer: Buffer): Buffer {
  if (buffer.byteOffset === 0 && buffer.byteLength === buffer.buffer.byteLength) return buffer;
  const copy = Buffer.allocUnsafeSlow(buffer.length);
  buffer.copy(copy);
  return copy;
}
