/**
 * The storage seam. Bytes live in one of two areas:
 *  - staging: content that has been pushed but not admitted (quarantine);
 *  - committed: content that has been admitted and may be served to readers.
 * Upload scratch space is separate from both. Content in either area is addressed by
 * digest only; the registry verifies digests before anything reaches an area.
 */
import type { Readable, Writable } from 'node:stream';
import type { Digest, DigestAlgorithm } from '../registry/names.js';

export type Area = 'staging' | 'committed';

/** The area a content record's state names. */
export function areaOf(state: 'staged' | 'committed'): Area {
  return state === 'staged' ? 'staging' : 'committed';
}

/** The other area: where content may be when a commit (or a new upload of it) moved it since its record was read. */
export function otherArea(area: Area): Area {
  return area === 'staging' ? 'committed' : 'staging';
}

/** Inclusive byte range. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface OpenedBlob {
  size: number;
  stream: Readable;
}

/** Sees, in order, every byte an upload writer writes (the upload's digest). */
export interface UploadTap {
  /** A returned promise holds the chunk's memory: the writer does not change it before it settles. */
  update(chunk: Buffer): Promise<void> | void;
}

export interface BlobStore {
  readonly driver: string;
  init(): Promise<void>;

  /**
   * A writable for an upload's scratch bytes, starting at `offset` (the current upload size);
   * `tap` sees the bytes as they are written.
   */
  openUploadWriter(uploadId: string, offset: number, tap?: UploadTap): Promise<Writable>;
  /**
   * Where the driver can: writes `source`'s body, when its socket is offered
   * (socket-ingest.ts), from `offset` into the upload's scratch bytes, read straight from the
   * socket and hashed on the way; its size and its digest's hex. Null, touching nothing, when
   * it is not taken that way: the caller reads `source` as usual.
   */
  ingestUpload?(uploadId: string, offset: number, source: object, algorithm: DigestAlgorithm): Promise<{ bytes: number; hex: string } | null>;
  /** Discards upload bytes past `size` (after a failed append). */
  truncateUpload(uploadId: string, size: number): Promise<void>;
  readUpload(uploadId: string): Promise<Readable>;
  /** Makes an upload's bytes durable (a missing, zero-byte upload is no error), before it is promoted. */
  syncUpload(uploadId: string): Promise<void>;
  /**
   * Moves a finished upload of `size` bytes, made durable by syncUpload, into the staging area
   * under its verified digest. Content already there with that size is kept (the upload is
   * dropped); an upload whose bytes are gone fails with BlobNotFoundError, unless it is empty.
   *
   * With `flushed: false` the upload was not made durable first (its blob is flushed after its
   * 201, see the registry's BlobFlushes): the move is not flushed either, content already
   * there is replaced (without a flush it may be a file a crash cut), and
   * `flushContent('staging', digest, uploadId)` must follow.
   */
  promoteUpload(uploadId: string, digest: Digest, size: number, options?: { flushed?: boolean }): Promise<void>;
  /**
   * Makes content's bytes, and the directory entry that names them, durable. With `uploadId`
   * (content promoted unflushed from that upload), first waits for the upload's background
   * flushes, whose failure fails this one. BlobNotFoundError when the content is not there.
   */
  flushContent(area: Area, digest: Digest, uploadId?: string): Promise<void>;
  deleteUpload(uploadId: string): Promise<void>;
  /** Upload scratch files with the time they were last written (for purging abandoned ones). */
  listUploads(): Promise<Array<{ id: string; modified: Date }>>;

  /** Writes small content (manifests) straight into the staging area; content already there with its size is kept. */
  putStaged(digest: Digest, data: Buffer): Promise<void>;
  stat(area: Area, digest: Digest): Promise<{ size: number } | null>;
  /** Opens content for reading; null when absent. */
  open(area: Area, digest: Digest, range?: ByteRange): Promise<OpenedBlob | null>;
  /** Moves content from staging to committed. Idempotent: already committed is success. */
  commit(digest: Digest): Promise<void>;
  delete(area: Area, digest: Digest): Promise<void>;
  /** Every digest stored in an area (for garbage collection and checks). */
  list(area: Area): AsyncIterable<Digest>;
  /** Bytes the gateway may still write where the content goes, when the driver can tell. */
  freeBytes?(): Promise<number>;
}

export class BlobNotFoundError extends Error {
  constructor(area: Area | 'uploads', what: string) {
    super(`${what} not found in ${area}`);
    this.name = 'BlobNotFoundError';
  }
}
