/**
 * OCI distribution semantics without HTTP: upload sessions, blobs, manifests, tags,
 * referrers and the catalog. Every write is verified against its digest before it
 * reaches a storage area; manifests are stored staged and committed only on admission.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { areaOf, otherArea, type BlobStore, type ByteRange, type OpenedBlob } from '../storage/blobstore.js';
import { locationOf, type BlobRecord, type ContentLocation, type ManifestRecord, type MetadataStore, type NewManifest, type TagPrecondition } from '../db/metadata.js';
import type { Queryable } from '../db/database.js';
import { RegistryError } from './errors.js';
import { BlobFlushes } from './blob-flushes.js';
import { ByteMeter, digestStream, overLimit, ownMemory, readAll } from './streams.js';
import { finishedDigest, sharedHashing, type Hashing, type StreamDigest } from './hashing.js';
import { contentDigestsOf, parseManifest, type ParsedManifest } from './manifest.js';
import { MEDIA_TYPES } from './mediatypes.js';
import { admitEverything, EarlyAdmissionDeclined, type Admit, type AdmitEarly, type AdmissionDecision, type AdmissionRequest, type EarlyAdmission } from './admission.js';
import {
  assertTag,
  fallbackTag,
  isValidTag,
  looksLikeDigest,
  parseDigest,
  parseReference,
  UPLOAD_ID_RE,
  type Digest,
  type DigestAlgorithm,
} from './names.js';

export interface RegistryLimits {
  maxManifestBytes: number;
  /** 0 = unbounded. */
  maxBlobBytes: number;
  /** Most entries one tag or catalog page returns. */
  maxPageSize: number;
  deleteEnabled: boolean;
  /**
   * Writes that would leave less than this many bytes free where content goes are refused with
   * 507 (0 or absent: no reserve). The embedded database shares the storage root by default,
   * and PGlite hangs for good once its log cannot be written: the reserve is its room.
   */
  reserveBytes?: number;
}

/** A state change worth an audit record, written in the transaction that makes the change. */
export interface RegistryEvent {
  action: 'push' | 'delete.manifest' | 'delete.tag' | 'delete.blob';
  repository: string;
  digest?: string | null;
  principal?: string | null;
  requestId?: string | null;
  detail?: Record<string, unknown>;
}

export type RecordEvent = (tx: Queryable, event: RegistryEvent) => Promise<void>;

/** Who asked, for the audit trail. */
export interface Actor {
  principal?: string | null;
  requestId?: string | null;
}

export interface RegistryOptions {
  metadata: MetadataStore;
  store: BlobStore;
  limits: RegistryLimits;
  logger: Logger;
  admit?: Admit;
  /** Records pushes and deletions in their own transactions (the audit trail); a failure fails the operation. */
  record?: RecordEvent;
  /** Where upload digests are computed (default: the process's hashing worker threads). */
  hashing?: Hashing;
  /**
   * When a blob's bytes must be on disk: before its own 201 (`upload`, the default here), or
   * before a manifest that references it is accepted (`manifest`, see BlobFlushes).
   */
  blobFlush?: 'manifest' | 'upload';
}

/** In-memory progress of a streaming hash over an upload, valid while `offset` matches. */
interface UploadHash {
  algorithm: DigestAlgorithm;
  hash: StreamDigest;
  offset: number;
}

/** Upload digests in progress by upload id; an entry deleted or replaced drops its stream. */
class UploadHashes extends Map<string, UploadHash> {
  override set(id: string, state: UploadHash): this {
    const old = this.get(id);
    if (old && old !== state) old.hash.dispose();
    return super.set(id, state);
  }

  override delete(id: string): boolean {
    this.get(id)?.hash.dispose();
    return super.delete(id);
  }

  /** Removes an entry without dropping its stream (to take its digest). */
  take(id: string): UploadHash | undefined {
    const state = this.get(id);
    super.delete(id);
    return state;
  }
}

/** What a caller may see of one repository: pushers also see staged (quarantined) content. */
export interface RepositoryView {
  seesStaged: boolean;
}

export const FULL_VIEW: RepositoryView = { seesStaged: true };

export interface ContentRange {
  start: number;
  end: number;
}

export interface ManifestPutResult {
  digest: string;
  subject: string | null;
  tags: string[];
  decision: AdmissionDecision;
}

export interface StoredManifest {
  record: ManifestRecord;
  body: Buffer;
}

export interface ReferrersResult {
  index: { schemaVersion: 2; mediaType: string; manifests: ReferrerDescriptor[] };
  filtered: boolean;
}

interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

const EMPTY_JSON = Buffer.from('{}');
const EMPTY_JSON_DIGEST = `sha256:${createHash('sha256').update(EMPTY_JSON).digest('hex')}`;
const CONTENT_CACHE_BYTES = 64 * 1024 * 1024;
/**
 * Blobs up to this size (configs, signature payloads, small attestations) are kept in their
 * database row, as manifests are: closing the upload then flushes, renames and commits no
 * file, and the blob is durable with the database's commit. Uploaded whole, they also keep
 * their bytes in the content cache: the gate reads them back at the manifest PUT that follows.
 */
export const SMALL_BLOB_BYTES = 64 * 1024;
/** A body being stored checks the free space again after each this many bytes. */
const SPACE_CHECK_BYTES = 64 * 1024 * 1024;
/** How long a reading of the free space serves the checks at the start of requests. */
const SPACE_READING_MS = 250;
/** Staged blobs moved to the committed area at once. */
const COMMIT_CONCURRENCY = 8;

export class Registry {
  readonly metadata: MetadataStore;
  readonly store: BlobStore;
  readonly limits: RegistryLimits;
  private readonly logger: Logger;
  private admit: Admit;
  private admitEarly: AdmitEarly | null;
  private readonly record: RecordEvent;
  private readonly uploadHashes = new UploadHashes();
  private readonly hashing: Hashing;
  private readonly busyUploads = new Set<string>();
  /** Flushes of blobs answered before their bytes were on disk (blobFlush `manifest`). */
  readonly blobFlushes: BlobFlushes;
  /** Whether a blob's 201 comes before its bytes are flushed (and before the database's log is). */
  readonly flushesBlobsLater: boolean;
  /**
   * Small content by digest (manifests, small blobs), and the bytes so far of small uploads
   * under `upload:<id>`; bounded, least recently used first out.
   */
  private readonly contentCache = new ByteLru(CONTENT_CACHE_BYTES);
  private spaceReading: { at: number; free: Promise<number> } | null = null;

  constructor(options: RegistryOptions) {
    this.metadata = options.metadata;
    this.store = options.store;
    this.limits = options.limits;
    this.logger = options.logger;
    this.admit = options.admit ?? admitEverything;
    // Without a gate or an injected hook every push is admitted: it is stored committed at once.
    this.admitEarly = options.admit ? null : (request) => this.admitAtOnce(request);
    this.record = options.record ?? (async () => undefined);
    this.hashing = options.hashing ?? sharedHashing();
    this.blobFlushes = new BlobFlushes(this.store, this.metadata, this.logger);
    this.flushesBlobsLater = options.blobFlush === 'manifest';
  }

  /** Installs the gate's admission hooks (the gate needs the registry to exist first). */
  setAdmit(admit: Admit, admitEarly?: AdmitEarly): void {
    this.admit = admit;
    this.admitEarly = admitEarly ?? null;
  }

  // ---- uploads ------------------------------------------------------------------------

  async startUpload(repository: string, algorithm: DigestAlgorithm = 'sha256'): Promise<string> {
    await this.requireSpace(0);
    const id = randomUUID();
    await this.metadata.createUpload(id, repository);
    this.uploadHashes.set(id, { algorithm, hash: this.hashing.open(algorithm), offset: 0 });
    return id;
  }

  async uploadStatus(repository: string, id: string): Promise<number> {
    return (await this.requireUpload(repository, id)).size;
  }

  /**
   * Appends a request body to an upload. With a Content-Range the chunk must start exactly
   * at the current size (else 416); without one it is appended at the current offset
   * (the streamed-upload form Docker and containerd use).
   */
  async appendUpload(
    repository: string,
    id: string,
    source: Readable,
    range: ContentRange | null,
    contentLength: number | null,
  ): Promise<number> {
    return this.withUploadLock(repository, id, async (size) => this.appendLocked(id, size, source, range, contentLength));
  }

  /** Closes an upload (optionally with a last chunk), verifies its digest and stages it. */
  async finishUpload(
    repository: string,
    id: string,
    digest: Digest,
    source: Readable | null,
    range: ContentRange | null,
    contentLength: number | null,
  ): Promise<void> {
    await this.withUploadLock(repository, id, async (recorded) => {
      if (source && recorded === 0 && !range && contentLength !== null && contentLength <= SMALL_BLOB_BYTES) {
        return this.finishSmallUpload(repository, id, digest, source, contentLength);
      }
      // A last chunk's size is not recorded on its own: ending the session checks that it is
      // still at `recorded` (no other writer moved it), in the statement that ends it.
      const size = source ? await this.appendLocked(id, recorded, source, range, contentLength, false) : recorded;
      // Meanwhile: whether the content the client names is stored already (read once the digest is checked).
      const stored = this.isStored(digest);
      stored.catch(() => undefined);
      // The bytes go to disk while the digest is finished (wasted when it is wrong, or the content
      // is stored already), or after the 201 (BlobFlushes). A small blob's go into the database
      // instead (stageUploadedBlob).
      const flushLater = this.flushesBlobsLater && size > SMALL_BLOB_BYTES;
      const sync = size <= SMALL_BLOB_BYTES || flushLater ? Promise.resolve() : this.store.syncUpload(id);
      const [digested, synced] = await Promise.allSettled([this.uploadDigest(id, size, digest.algorithm), sync]);
      try {
        if (digested.status === 'rejected') throw digested.reason;
        if (digested.value !== digest.value) throw uploadDigestMismatch(digest, digested.value);
        if (synced.status === 'rejected') throw synced.reason;
      } catch (err) {
        // The session stays open with the chunk, as after a PATCH; without it when that cannot be recorded.
        if (size !== recorded && !(await this.metadata.advanceUpload(id, recorded, size).catch(() => false))) {
          this.uploadHashes.delete(id);
          await this.store.truncateUpload(id, recorded).catch(() => undefined);
        }
        throw err;
      }
      await this.stageUploadedBlob(repository, id, digest, size, recorded, await stored, this.contentCache.take(`upload:${id}`), flushLater);
      return size;
    });
  }

  /**
   * Closes a new upload sent whole in one small body (a config, a signature payload) from
   * memory: its bytes are checked and go into their database row, and no file is written. With
   * the wrong digest they are kept in the session, as a larger body is.
   */
  private async finishSmallUpload(repository: string, id: string, digest: Digest, source: Readable, contentLength: number): Promise<number> {
    const limit = this.limits.maxBlobBytes;
    if (limit > 0 && contentLength > limit) throw overLimit(limit);
    await this.requireSpace(contentLength);
    const stored = this.isStored(digest);
    stored.catch(() => undefined);
    // Read whole (at most Content-Length bytes): through pipeline() and a sink this took 0.3-0.5 ms more.
    const bytes = await readAll(source);
    const actual = `${digest.algorithm}:${hashHex(digest.algorithm, bytes)}`;
    if (actual !== digest.value) {
      await this.appendLocked(id, 0, Readable.from([bytes], { objectMode: false }), null, bytes.length);
      throw uploadDigestMismatch(digest, actual);
    }
    this.uploadHashes.delete(id);
    await this.endUpload(repository, id, digest, bytes.length, 0, (await stored) ? null : bytes);
    this.contentCache.set(digest.value, bytes);
    return bytes.length;
  }

  /** Ends an upload session and drops its bytes; not while a request writes to it (409). */
  async cancelUpload(repository: string, id: string): Promise<void> {
    const busy = () =>
      new RegistryError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload; cancel it once that request has ended', { status: 409 });
    await this.withUploadLock(
      repository,
      id,
      async () => {
        await this.metadata.deleteUpload(id);
        this.uploadHashes.delete(id);
        this.contentCache.take(`upload:${id}`);
        await this.store.deleteUpload(id);
        return 0;
      },
      busy,
    );
  }

  /** Single-request upload: POST with `?digest=` and the whole blob as body. */
  async uploadMonolithic(repository: string, digest: Digest, source: Readable, contentLength: number | null): Promise<void> {
    const id = await this.startUpload(repository, digest.algorithm);
    try {
      await this.finishUpload(repository, id, digest, source, null, contentLength);
    } catch (err) {
      await this.cancelUpload(repository, id).catch(() => undefined);
      throw err;
    }
  }

  /** Links a blob from another repository; false when it cannot be mounted (caller falls back to an upload). */
  async mountBlob(repository: string, digest: Digest, from: string, sourceView: RepositoryView = FULL_VIEW): Promise<boolean> {
    await this.requireSpace(0);
    const source = await this.metadata.findBlob(from, digest.value);
    if (!source || (!source.committedInRepository && !sourceView.seesStaged)) return false;
    await this.metadata.linkBlob(repository, digest.value, source.size);
    return true;
  }

  /** Deletes upload sessions untouched since `olderThan`, with their bytes. */
  async purgeStaleUploads(olderThan: Date): Promise<number> {
    const ids = await this.metadata.staleUploads(olderThan);
    let purged = 0;
    for (const id of ids) {
      // Held like a writer's lock while it is purged, so no request can finish it meanwhile.
      if (this.busyUploads.has(id)) continue;
      this.busyUploads.add(id);
      try {
        await this.metadata.deleteUpload(id);
        this.uploadHashes.delete(id);
        await this.store.deleteUpload(id);
        purged++;
      } finally {
        this.busyUploads.delete(id);
      }
    }
    // Scratch files whose session row is gone (a crash between the two deletes).
    let orphans = 0;
    for (const file of await this.store.listUploads()) {
      if (file.modified >= olderThan || this.busyUploads.has(file.id)) continue;
      if (await this.metadata.uploadExists(file.id)) continue;
      await this.store.deleteUpload(file.id);
      orphans++;
    }
    if (purged + orphans > 0) this.logger.info({ purged, orphans }, 'purged stale uploads');
    return purged + orphans;
  }

  private async requireUpload(repository: string, id: string) {
    const upload = UPLOAD_ID_RE.test(id) ? await this.metadata.getUpload(id) : null;
    if (!upload || upload.repository !== repository) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} is unknown in ${repository}`);
    }
    return upload;
  }

  /** Runs `fn` as the one request working on an upload; another gets `busy` (by default 416 with the upload's Range). */
  private async withUploadLock(
    repository: string,
    id: string,
    fn: (size: number) => Promise<number>,
    busy?: () => RegistryError,
  ): Promise<number> {
    const upload = await this.requireUpload(repository, id);
    if (this.busyUploads.has(id)) {
      throw (
        busy?.() ??
        new RegistryError('RANGE_INVALID', 'another request is writing to this upload', { status: 416, headers: { Range: rangeHeader(upload.size) } })
      );
    }
    this.busyUploads.add(id);
    try {
      return await fn(upload.size);
    } finally {
      this.busyUploads.delete(id);
    }
  }

  private async appendLocked(
    id: string,
    size: number,
    source: Readable,
    range: ContentRange | null,
    contentLength: number | null,
    record = true,
  ): Promise<number> {
    if (range) {
      // The HTTP layer discards the unread body with the answer (or never asks for it: 100-continue).
      if (range.start !== size) {
        throw new RegistryError('RANGE_INVALID', `chunk starts at ${range.start}, upload is at ${size}`, {
          status: 416,
          headers: { Range: rangeHeader(size) },
        });
      }
      const expected = range.end - range.start + 1;
      if (contentLength !== null && contentLength !== expected) {
        throw new RegistryError('RANGE_INVALID', `Content-Range covers ${expected} bytes, Content-Length is ${contentLength}`, {
          status: 416,
          headers: { Range: rangeHeader(size) },
        });
      }
    }
    await this.requireSpace(contentLength ?? 0);
    const state = this.uploadHashes.get(id);
    const hash = state && state.offset === size ? state.hash : null;
    if (!hash) this.uploadHashes.delete(id);
    const remaining = this.limits.maxBlobBytes > 0 ? this.limits.maxBlobBytes - size : 0;
    // The last body of an upload that starts it may be read from its socket by the store, its digest with it.
    if (!record && state && hash && size === 0 && contentLength !== null && (remaining === 0 || contentLength <= remaining) && this.store.ingestUpload) {
      const ingested = await this.ingest(id, state, source);
      if (ingested !== null) return ingested;
    }
    const keep = contentLength !== null && size + contentLength <= SMALL_BLOB_BYTES;
    // A body longer than announced, or streamed without a length, is checked as it comes.
    const spaceCheck = this.reserving() ? { every: SPACE_CHECK_BYTES, check: () => this.requireSpace(0, true) } : undefined;
    const meter = new ByteMeter(remaining, keep, spaceCheck);
    try {
      // The writer feeds the digest from the memory it writes: no copy of the bytes for it here.
      const writer = await this.store.openUploadWriter(id, size, hash ?? undefined);
      await pipeline(source, meter, writer);
    } catch (err) {
      await this.cutUploadBack(id, size);
      throw err;
    }
    if (range && meter.bytes !== range.end - range.start + 1) {
      await this.cutUploadBack(id, size);
      throw new RegistryError('SIZE_INVALID', `chunk has ${meter.bytes} bytes, Content-Range says ${range.end - range.start + 1}`);
    }
    const newSize = size + meter.bytes;
    if (record && !(await this.metadata.advanceUpload(id, size, newSize))) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'upload changed or vanished while writing');
    }
    if (state && hash) state.offset = newSize;
    this.keepUploadBytes(id, size, meter.kept());
    return newSize;
  }

  /** A new upload's whole body through the store's ingestUpload; null when the store reads it no such way. */
  private async ingest(id: string, state: UploadHash, source: Readable): Promise<number | null> {
    let ingested: { bytes: number; hex: string } | null;
    try {
      ingested = (await this.store.ingestUpload?.(id, 0, source, state.algorithm)) ?? null;
    } catch (err) {
      await this.cutUploadBack(id, 0);
      throw err;
    }
    if (ingested === null) return null;
    this.uploadHashes.set(id, { algorithm: state.algorithm, hash: finishedDigest(ingested.hex), offset: ingested.bytes });
    return ingested.bytes;
  }

  /** After a failed write: the upload's bytes cut back to `size`, its running digest forgotten (the bytes are hashed again). */
  private async cutUploadBack(id: string, size: number): Promise<void> {
    this.uploadHashes.delete(id);
    await this.store.truncateUpload(id, size);
  }

  private async uploadDigest(id: string, size: number, algorithm: DigestAlgorithm): Promise<string> {
    const state = this.uploadHashes.get(id);
    if (state && state.offset === size && state.algorithm === algorithm) {
      this.uploadHashes.take(id);
      const hex = await state.hash.digest().catch((err: Error) => {
        this.logger.warn({ err, upload: id }, 'hashing the upload off the request thread failed; hashing its bytes on disk');
        return null;
      });
      if (hex !== null) return `${algorithm}:${hex}`;
    }
    // Another process took earlier chunks, the client chose another algorithm, or the hashing
    // worker failed: hash the bytes on disk.
    if (size === 0) return `${algorithm}:${createHash(algorithm).digest('hex')}`;
    const { hex } = await digestStream(await this.store.readUpload(id), algorithm);
    return `${algorithm}:${hex}`;
  }

  /** Extends the cached bytes of a small upload with a chunk written at `offset` (when they cover everything before it). */
  private keepUploadBytes(id: string, offset: number, chunk: Buffer | null): void {
    const earlier = this.contentCache.take(`upload:${id}`);
    if (!chunk) return;
    if (offset === 0) this.contentCache.set(`upload:${id}`, chunk);
    else if (earlier?.length === offset) this.contentCache.set(`upload:${id}`, Buffer.concat([earlier, chunk]));
  }

  /** Whether content is recorded and its bytes are where the record says. */
  private async isStored(digest: Digest): Promise<boolean> {
    const existing = await this.metadata.getBlob(digest.value);
    return existing !== null && (await this.hasBytes(existing, digest));
  }

  /**
   * Stages the upload's bytes (unless the content is stored already), then ends the session
   * and links the content. A small blob's bytes go into its database row instead, and its
   * scratch file (if any) is dropped once the row is written. `kept`: the bytes as they
   * arrived, when the registry kept them (small uploads); cached once verified.
   */
  private async stageUploadedBlob(
    repository: string,
    id: string,
    digest: Digest,
    size: number,
    recorded: number,
    stored: boolean,
    kept: Buffer | undefined,
    flushLater: boolean,
  ): Promise<void> {
    const small = !stored && size <= SMALL_BLOB_BYTES ? await this.smallUploadBytes(id, digest, size, kept) : null;
    if (stored) await this.store.deleteUpload(id);
    if (stored || small) {
      this.uploadHashes.delete(id);
      await this.endUpload(repository, id, digest, size, recorded, small);
    } else if (flushLater) {
      await this.endUploadStagedUnflushed(repository, id, digest, size, recorded);
    } else {
      await this.endUploadWhileStaging(repository, id, digest, size, recorded);
    }
    if (small) {
      await this.store.deleteUpload(id);
      this.contentCache.set(digest.value, small);
    } else if (kept?.length === size && hashHex(digest.algorithm, kept) === digest.hex) {
      // Cached only as the content it was verified to be.
      this.contentCache.set(digest.value, kept);
    }
  }

  /** Ends the session and links its content; `small`: a small blob's bytes, for its row when the content is new. */
  private async endUpload(repository: string, id: string, digest: Digest, size: number, recorded: number, small: Buffer | null): Promise<void> {
    if (!(await this.metadata.finishUpload(id, digest.value, size, recorded, small))) throw uploadChanged(repository, id);
  }

  /**
   * Ends the session of a blob kept as a file while the file is renamed into the staging area
   * (and the rename flushed): the statement runs in a transaction that commits only once the
   * rename is done, so no one reads the row before its file is there, and a failed rename takes
   * the statement back (the session stays open for a retry). The two took about 0.8 ms each,
   * one after the other; in image-push replays (150 layers a round, alternating, three rounds)
   * from the flushed bytes to the session ended went from 1.95-2.25 to 1.47-1.60 ms.
   */
  private async endUploadWhileStaging(repository: string, id: string, digest: Digest, size: number, recorded: number): Promise<void> {
    const staged = this.store.promoteUpload(id, digest, size);
    staged.catch(() => undefined);
    const ended = await this.metadata.db
      .transaction(async (tx) => {
        const done = await this.metadata.finishUpload(id, digest.value, size, recorded, null, tx);
        await staged;
        return done;
      })
      .finally(() => staged.catch(() => undefined)); // a statement that failed first: the rename ends before the answer
    this.uploadHashes.delete(id);
    if (!ended) throw uploadChanged(repository, id);
  }

  /**
   * Ends the session of a blob whose bytes are flushed after its 201 (BlobFlushes): the
   * statement names the upload as the flush pending, then the file is moved into the staging
   * area (not flushed, replacing whatever is there), and the transaction commits once it is.
   * The statement comes first so that no earlier flush of the same digest marks the record
   * flushed once this file stands in its place. The flush starts when the transaction has
   * committed; a failed rename takes the statement back, as in endUploadWhileStaging.
   */
  private async endUploadStagedUnflushed(repository: string, id: string, digest: Digest, size: number, recorded: number): Promise<void> {
    let promoted = false;
    const ended = await this.metadata.db
      .transaction(async (tx) => {
        if (!(await this.metadata.finishUpload(id, digest.value, size, recorded, null, tx, true))) return false;
        await this.store.promoteUpload(id, digest, size, { flushed: false });
        promoted = true;
        return true;
      })
      .catch(async (err: unknown) => {
        // Moved, but the commit failed: the file stands unrecorded (a later upload replaces it); its flushes are dropped.
        if (promoted) await this.store.deleteUpload(id).catch(() => undefined);
        throw err;
      });
    this.uploadHashes.delete(id);
    if (!ended) throw uploadChanged(repository, id);
    this.blobFlushes.start(digest, id);
  }

  /** A small upload's bytes, as they arrived or read back from its file, checked against its digest once more. */
  private async smallUploadBytes(id: string, digest: Digest, size: number, kept: Buffer | undefined): Promise<Buffer> {
    const bytes = kept?.length === size ? kept : size === 0 ? Buffer.alloc(0) : await readAll(await this.store.readUpload(id));
    if (bytes.length !== size || hashHex(digest.algorithm, bytes) !== digest.hex) {
      throw new Error(`upload ${id}: its ${bytes.length} bytes no longer match ${digest.value} (${size} bytes)`);
    }
    return bytes;
  }

  // ---- blobs --------------------------------------------------------------------------

  /**
   * A blob's size, for HEAD. Staged content is answered from its bytes as well as its record: a
   * staged file can be lost (a disk error, a hand in the data directory) while its record stays,
   * and a 404 then makes a client that checks before it uploads send the blob again, which
   * writes the file anew. Committed content is answered from its record alone, so that a
   * remote store is not asked once per HEAD.
   */
  async statBlob(repository: string, digest: Digest, view: RepositoryView = FULL_VIEW): Promise<{ size: number }> {
    const blob = await this.findVisibleBlob(repository, digest, view);
    if (blob.state === 'staged' && !(await this.hasStagedBytes(blob, digest))) throw blobUnknown(digest);
    return { size: blob.size };
  }

  /** Whether staged content's bytes are whole: in its row, staged, or committed by a commit meanwhile. */
  private async hasStagedBytes(blob: BlobRecord, digest: Digest): Promise<boolean> {
    if (await this.hasBytes(blob, digest)) return true;
    return (await this.store.stat('committed', digest))?.size === blob.size;
  }

  async openBlob(repository: string, digest: Digest, range?: ByteRange, view: RepositoryView = FULL_VIEW): Promise<OpenedBlob> {
    const blob = await this.findVisibleBlob(repository, digest, view);
    const opened = await this.openContent(locationOf(blob), digest, range);
    if (!opened) throw blobUnknown(digest);
    if (opened.size !== blob.size) {
      // Never a short body under the recorded Content-Length: a client would wait for the rest.
      opened.stream.destroy();
      throw new Error(`the stored bytes of ${digest.value} are ${opened.size} bytes, its record says ${blob.size}`);
    }
    return opened;
  }

  private async findVisibleBlob(repository: string, digest: Digest, view: RepositoryView) {
    const blob = await this.metadata.findBlob(repository, digest.value);
    if (!blob || (!blob.committedInRepository && !view.seesStaged)) throw blobUnknown(digest);
    return blob;
  }

  async deleteBlob(repository: string, digest: Digest, actor: Actor = {}): Promise<void> {
    this.requireDelete('GET, HEAD');
    const event: RegistryEvent = { action: 'delete.blob', repository, digest: digest.value, ...actor };
    if (!(await this.metadata.unlinkBlob(repository, digest.value, (tx) => this.record(tx, event)))) throw blobUnknown(digest);
  }

  /**
   * Reads whole content a repository holds (staged or committed), refusing anything above
   * `maxBytes`. For the gate's own reads (configs, signature payloads): content is addressed
   * by digest, so small content is served from memory once read.
   */
  async readContent(repository: string, digest: string, maxBytes: number): Promise<Buffer> {
    const cached = this.contentCache.get(digest);
    if (cached && cached.length <= maxBytes) return cached;
    const parsed = parseDigest(digest);
    const blob = await this.metadata.findBlob(repository, digest);
    if (!blob) throw blobUnknown(parsed);
    if (blob.size > maxBytes) {
      throw new RegistryError('SIZE_INVALID', `${digest} is ${blob.size} bytes, more than the ${maxBytes} this reader accepts`);
    }
    const opened = await this.openContent(locationOf(blob), parsed);
    if (!opened) throw blobUnknown(parsed);
    const body = await readAll(opened.stream);
    this.contentCache.set(digest, body);
    return body;
  }

  /**
   * Where the bytes of content are, by digest: `known` when it covers every digest (read
   * earlier, as a push read them), else read now. A commit by another request meanwhile is
   * harmless: commits are idempotent.
   */
  async contentLocations(digests: string[], known?: ReadonlyMap<string, ContentLocation>): Promise<ReadonlyMap<string, ContentLocation>> {
    return known && digests.every((d) => known.has(d)) ? known : this.metadata.contentLocations(digests);
  }

  /**
   * Moves staged content to the committed area, several at once; callers commit blobs before
   * the manifests that need them by calling this for each in turn. Content kept in the
   * database has no bytes to move: its state changes in the visible switch.
   */
  async commitContent(digests: string[], known?: ReadonlyMap<string, ContentLocation>): Promise<void> {
    const locations = await this.contentLocations(digests, known);
    const staged = digests.filter((d) => locations.get(d) === 'staged');
    for (let i = 0; i < staged.length; i += COMMIT_CONCURRENCY) {
      await Promise.all(staged.slice(i, i + COMMIT_CONCURRENCY).map((d) => this.store.commit(parseDigest(d))));
    }
  }

  /** Whether the bytes of recorded content are where its record says, whole (a lost or cut file is written again). */
  private async hasBytes(blob: BlobRecord, digest: Digest): Promise<boolean> {
    return blob.inline || (await this.store.stat(areaOf(blob.state), digest))?.size === blob.size;
  }

  /** Opens content where it is: its database row, its recorded area, or the other area if a commit moved it meanwhile. */
  private async openContent(location: ContentLocation, digest: Digest, range?: ByteRange): Promise<OpenedBlob | null> {
    if (location === 'inline') {
      const body = await this.metadata.inlineBody(digest.value);
      return body && openBuffer(body, range);
    }
    const area = areaOf(location);
    return (await this.store.open(area, digest, range)) ?? (await this.store.open(otherArea(area), digest, range));
  }

  // ---- manifests ----------------------------------------------------------------------

  async putManifest(
    repository: string,
    reference: string,
    body: Buffer,
    contentType: string | undefined,
    options: { extraTags?: string[]; ifMatch?: string; ifNoneMatch?: string } & Actor = {},
  ): Promise<ManifestPutResult> {
    const ref = parseReference(reference);
    // A tag named twice (in the path and as ?tag=, or twice as ?tag=) is one tag.
    const tags = [...new Set([...(ref.kind === 'tag' ? [ref.tag] : []), ...(options.extraTags ?? []).map(assertTag)])];
    const algorithm = ref.kind === 'digest' ? ref.digest.algorithm : 'sha256';
    const digest = parseDigest(`${algorithm}:${hashHex(algorithm, body)}`);
    if (ref.kind === 'digest' && ref.digest.value !== digest.value) {
      throw new RegistryError('DIGEST_INVALID', `manifest has digest ${digest.value}, not ${ref.digest.value}`, {
        detail: { expected: ref.digest.value, actual: digest.value },
      });
    }
    const manifest = parseManifest(body, contentType);
    await this.requireSpace(body.length);
    const contentLocations = await this.requireReferencedContent(repository, manifest);

    this.contentCache.set(digest.value, body);
    const actor: Actor = { principal: options.principal ?? null, requestId: options.requestId ?? null };
    const pushed: RegistryEvent = {
      action: 'push',
      repository,
      digest: digest.value,
      ...actor,
      detail: { mediaType: manifest.mediaType, size: body.length, tags, subject: manifest.subject?.digest ?? null, artifactType: manifest.artifactType },
    };
    const stored: NewManifest = {
      digest: digest.value,
      body,
      mediaType: manifest.mediaType,
      size: body.length,
      artifactType: manifest.artifactType,
      subjectDigest: manifest.subject?.digest ?? null,
      annotations: manifest.annotations,
      references: manifest.references,
    };
    const request: AdmissionRequest = { repository, digest: digest.value, manifest, size: body.length, tags, byDigest: ref.kind === 'digest', ...actor, contentLocations };
    const early = this.admitEarly ? await this.admitEarly(request) : null;
    if (early && (await this.putAdmittedManifest(repository, stored, manifest, tags, pushed, early, preconditionCheck(options)))) {
      return { digest: digest.value, subject: manifest.subject?.digest ?? null, tags, decision: early.decision };
    }
    const { created, content } = await this.metadata.putManifest(repository, stored, tags, (tx) => this.record(tx, pushed), preconditionCheck(options));
    contentLocations.set(digest.value, content);

    const decision = await this.admit({ ...request, firstPush: created });
    if (decision.outcome === 'admitted' && !decision.committed) await this.commitManifest(repository, digest.value, manifest, tags, contentLocations);
    return { digest: digest.value, subject: manifest.subject?.digest ?? null, tags, decision };
  }

  /**
   * The early verdict of a registry without a gate: admitted, its blobs moved into the
   * committed area before the transaction that stores the manifest committed ends (as
   * commitManifest moves them before its switch).
   */
  private async admitAtOnce(request: AdmissionRequest): Promise<EarlyAdmission> {
    const contentDigests = contentDigestsOf(request.manifest);
    const moves = this.commitContent(contentDigests, request.contentLocations);
    moves.catch(() => undefined);
    return {
      decision: { outcome: 'admitted', committed: true },
      beforeStore: async () => undefined,
      afterStore: () => moves,
      record: async () => undefined,
      committed: () => undefined,
      abandoned: () => moves.catch(() => undefined),
    };
  }

  /**
   * A manifest decided before it was stored (EarlyAdmission): stored committed with its
   * admission and the push's, decision's and commit's audit records, in one transaction. False
   * when that path declined (the manifest was there already, or the subject has an admission):
   * nothing of it is kept, and the caller takes the usual path.
   */
  private async putAdmittedManifest(
    repository: string,
    stored: NewManifest,
    manifest: ParsedManifest,
    tags: string[],
    pushed: RegistryEvent,
    early: EarlyAdmission,
    precondition: TagPrecondition | undefined,
  ): Promise<boolean> {
    const contentDigests = contentDigestsOf(manifest);
    let done = false;
    try {
      // Only a manifest new in the repository is stored this way: one already there would roll the store back.
      if (await this.metadata.getManifest(repository, stored.digest)) return false;
      done = await this.metadata.putAdmittedManifest(
        repository,
        stored,
        contentDigests,
        tags,
        {
          beforeStore: (tx) => early.beforeStore(tx),
          inTransaction: async (tx, repositoryId) => {
            await early.afterStore(tx, repositoryId);
            await this.record(tx, pushed);
            await early.record(tx);
          },
        },
        precondition,
      );
    } catch (err) {
      if (!(err instanceof EarlyAdmissionDeclined)) throw err;
    } finally {
      if (!done) await early.abandoned();
    }
    if (done) early.committed();
    return done;
  }

  /**
   * Makes an admitted manifest visible: blobs first, then the manifest bytes, then the
   * switch (states and tags) in one database transaction. A crash before the switch
   * leaves only unreferenced committed bytes, which garbage collection removes.
   */
  async commitManifest(
    repository: string,
    digest: string,
    manifest: ParsedManifest,
    tags: string[],
    known?: ReadonlyMap<string, ContentLocation>,
  ): Promise<void> {
    const contentDigests = contentDigestsOf(manifest);
    // Locations read once for both steps (or as the push read them).
    const locations = await this.contentLocations([...contentDigests, digest], known);
    await this.commitContent(contentDigests, locations);
    await this.commitContent([digest], locations);
    await this.metadata.commitManifest(repository, digest, contentDigests, tags);
  }

  async getManifest(repository: string, reference: string, view: RepositoryView = FULL_VIEW): Promise<StoredManifest> {
    const record = await this.findManifest(repository, reference, view);
    const cached = this.contentCache.get(record.digest);
    if (cached) return { record, body: cached };
    // In the database, or a file for manifests stored before they were kept there.
    let body = await this.metadata.inlineBody(record.digest);
    if (!body) {
      const opened = await this.openContent(record.state, parseDigest(record.digest));
      if (!opened) throw manifestUnknown(reference);
      body = await readAll(opened.stream);
    }
    this.contentCache.set(record.digest, body);
    return { record, body };
  }

  async findManifest(repository: string, reference: string, view: RepositoryView = FULL_VIEW): Promise<ManifestRecord> {
    // A malformed tag cannot name anything stored: it is unknown (404), as readers expect.
    if (!looksLikeDigest(reference) && !isValidTag(reference)) throw manifestUnknown(reference);
    const ref = parseReference(reference);
    const record =
      ref.kind === 'tag'
        ? await this.metadata.getManifestByTag(repository, ref.tag, view.seesStaged)
        : await this.metadata.getManifest(repository, ref.digest.value);
    if (!record || (record.state === 'staged' && !view.seesStaged)) throw manifestUnknown(reference);
    return record;
  }

  async deleteManifest(repository: string, reference: string, actor: Actor = {}): Promise<void> {
    this.requireDelete('GET, HEAD, PUT');
    const ref = parseReference(reference);
    const deleted =
      ref.kind === 'tag'
        ? await this.metadata.deleteTag(repository, ref.tag, (tx) =>
            this.record(tx, { action: 'delete.tag', repository, ...actor, detail: { tag: ref.tag } }),
          )
        : await this.metadata.deleteManifest(repository, ref.digest.value, (tx) =>
            this.record(tx, { action: 'delete.manifest', repository, digest: ref.digest.value, ...actor }),
          );
    if (!deleted) throw manifestUnknown(reference);
  }

  /**
   * Config, layers (except external `urls` layers) and index children must already be in the
   * repository. Returns where the bytes of the blobs found are (not the well-known empty blob's).
   */
  private async requireReferencedContent(repository: string, manifest: ParsedManifest): Promise<Map<string, ContentLocation>> {
    const missing: string[] = [];
    const blobs = await this.metadata.findBlobs(
      repository,
      manifest.required.filter((r) => r.kind !== 'manifest').map((r) => r.digest),
    );
    const children = await this.metadata.getManifests(
      repository,
      manifest.required.filter((r) => r.kind === 'manifest').map((r) => r.digest),
    );
    const childDigests = new Set(children.map((c) => c.digest));
    for (const required of manifest.required) {
      const found = required.kind === 'manifest' ? childDigests.has(required.digest) : blobs.has(required.digest);
      if (found) continue;
      if (required.digest === EMPTY_JSON_DIGEST) {
        await this.stageWellKnownEmptyBlob(repository);
        continue;
      }
      missing.push(required.digest);
    }
    if (missing.length > 0) {
      throw new RegistryError('MANIFEST_BLOB_UNKNOWN', `manifest references content not in ${repository}: ${missing.join(', ')}`, {
        detail: { missing },
      });
    }
    // Accepted only on bytes that are on disk (blobs answered before their flush: BlobFlushes).
    await this.blobFlushes.settle(blobs.values());
    return new Map([...blobs.values()].map((b) => [b.digest, locationOf(b)]));
  }

  /**
   * The empty descriptor's `{}` is known to everyone; clients may reference it without pushing
   * it. Kept in the database, as any small blob.
   */
  private async stageWellKnownEmptyBlob(repository: string): Promise<void> {
    const digest = parseDigest(EMPTY_JSON_DIGEST);
    const body = (await this.isStored(digest)) ? null : EMPTY_JSON;
    await this.metadata.linkBlob(repository, digest.value, EMPTY_JSON.length, undefined, body);
  }

  // ---- listing ------------------------------------------------------------------------

  async listTags(repository: string, last: string | undefined, n: number | undefined, view: RepositoryView = FULL_VIEW) {
    if ((await this.metadata.repositoryId(repository)) === null) {
      throw new RegistryError('NAME_UNKNOWN', `repository ${repository} is not known`, { detail: { name: repository } });
    }
    return this.page(n, (limit) => this.metadata.listTags(repository, last, limit, view.seesStaged));
  }

  /**
   * Repository names the caller may see: `visible(name, hasAdmittedContent)` decides per
   * repository, so pages are filled by reading on until enough names pass.
   */
  async catalog(last: string | undefined, n: number | undefined, visible: (name: string, committed: boolean) => boolean = () => true) {
    return this.page(n, async (limit) => {
      const names: string[] = [];
      let cursor = last;
      for (;;) {
        const batch = await this.metadata.listRepositories(cursor, Math.max(limit, 100));
        for (const repo of batch) if (visible(repo.name, repo.committed) && names.length < limit) names.push(repo.name);
        if (names.length >= limit || batch.length === 0) return names;
        cursor = batch[batch.length - 1].name;
      }
    });
  }

  /** Fetches one more than the page size to know whether a next page exists. */
  private async page(n: number | undefined, fetch: (limit: number) => Promise<readonly string[]>) {
    const size = Math.min(n ?? this.limits.maxPageSize, this.limits.maxPageSize);
    if (size === 0) return { items: [] as string[], more: false };
    const rows = await fetch(size + 1);
    return { items: rows.slice(0, size), more: rows.length > size };
  }

  async listReferrers(
    repository: string,
    subject: Digest,
    artifactType?: string,
    view: RepositoryView = FULL_VIEW,
  ): Promise<ReferrersResult> {
    const records = await this.metadata.listReferrers(repository, subject.value);
    const seen = new Set(records.map((r) => r.digest));
    for (const extra of await this.fallbackReferrers(repository, subject)) {
      if (!seen.has(extra.digest)) {
        seen.add(extra.digest);
        records.push(extra);
      }
    }
    const manifests = records
      .filter((r) => view.seesStaged || r.state === 'committed')
      .filter((r) => !artifactType || r.artifactType === artifactType)
      .map((r) => {
        const entry: ReferrerDescriptor = { mediaType: r.mediaType, digest: r.digest, size: r.size };
        if (r.artifactType) entry.artifactType = r.artifactType;
        if (r.annotations && Object.keys(r.annotations).length > 0) entry.annotations = r.annotations;
        return entry;
      });
    return {
      index: { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests },
      filtered: artifactType !== undefined,
    };
  }

  /**
   * Manifests that clients listed in the `<alg>-<hex>` fallback index. Each entry is read
   * from our own records (never trusted from the index), and kept only if it exists in
   * this repository and does not name a different subject.
   */
  private async fallbackReferrers(repository: string, subject: Digest): Promise<ManifestRecord[]> {
    const indexRecord = await this.metadata.getManifestByTag(repository, fallbackTag(subject));
    if (!indexRecord || indexRecord.mediaType !== MEDIA_TYPES.ociIndex) return [];
    const { body } = await this.getManifest(repository, indexRecord.digest);
    let listed: string[];
    try {
      const parsed = parseManifest(body, MEDIA_TYPES.ociIndex);
      listed = parsed.manifests.map((m) => m.digest);
    } catch {
      return [];
    }
    const records = await this.metadata.getManifests(repository, listed);
    return records.filter((r) => r.subjectDigest === null || r.subjectDigest === subject.value);
  }

  private reserving(): boolean {
    return (this.limits.reserveBytes ?? 0) > 0 && this.store.freeBytes !== undefined;
  }

  /**
   * Refuses (507) a write of `bytes` that would leave less than the reserve free. A reading of
   * the free space serves the requests of the next 250 ms, unless `fresh` asks for a new one.
   */
  private async requireSpace(bytes: number, fresh = false): Promise<void> {
    const reserve = this.limits.reserveBytes ?? 0;
    const { freeBytes } = this.store;
    if (reserve <= 0 || !freeBytes) return;
    const now = performance.now();
    if (fresh || !this.spaceReading || now - this.spaceReading.at > SPACE_READING_MS) {
      this.spaceReading = { at: now, free: freeBytes.call(this.store) };
      this.spaceReading.free.catch(() => (this.spaceReading = null));
    }
    const free = await this.spaceReading.free;
    if (free - bytes < reserve) {
      const mib = (n: number) => `${Math.floor(n / (1024 * 1024))} MiB`;
      throw new RegistryError(
        'UNKNOWN',
        `out of storage space: ${mib(free)} free, and the registry keeps ${mib(reserve)} free (storage.reserveBytes); retry once space is freed`,
        { status: 507 },
      );
    }
  }

  /** `allow`: the methods the resource takes without deletion, for the 405's Allow header. */
  private requireDelete(allow: string): void {
    if (!this.limits.deleteEnabled) {
      throw new RegistryError('UNSUPPORTED', 'deletion is disabled on this registry', { headers: { Allow: allow } });
    }
  }
}

/** Content held in memory (read from the database), as the blob store would open it; `range` is inclusive. */
function openBuffer(body: Buffer, range?: ByteRange): OpenedBlob {
  const bytes = range ? body.subarray(range.start, range.end + 1) : body;
  return { size: body.length, stream: Readable.from([bytes], { objectMode: false }) };
}

function hashHex(algorithm: DigestAlgorithm, bytes: Buffer): string {
  return createHash(algorithm).update(bytes).digest('hex');
}

export function rangeHeader(size: number): string {
  return `0-${Math.max(size - 1, 0)}`;
}

/**
 * If-Match / If-None-Match against what each tag names now (for a pusher: its newest push,
 * pending or committed, as a pusher's GET shows it). Called by the metadata store inside the
 * transaction that writes the tags, with the tags locked, so that of concurrent conditional
 * PUTs only one can pass (no lost update).
 */
function preconditionCheck(options: { ifMatch?: string; ifNoneMatch?: string }): TagPrecondition | undefined {
  const { ifMatch, ifNoneMatch } = options;
  if (!ifMatch && !ifNoneMatch) return undefined;
  return (current) => {
    for (const [tag, digest] of current) {
      const etag = digest ? `"${digest}"` : null;
      if (ifMatch && !etagListMatches(ifMatch, etag, 'strong')) {
        throw new RegistryError('DENIED', `precondition failed: tag ${tag} is ${digest ?? 'absent'}`, { status: 412, detail: { tag, current: digest } });
      }
      if (ifNoneMatch && etagListMatches(ifNoneMatch, etag, 'weak')) {
        throw new RegistryError('DENIED', `precondition failed: tag ${tag} already exists`, { status: 412, detail: { tag, current: digest } });
      }
    }
  };
}

/**
 * Whether an If-Match or If-None-Match list names `etag` (null: there is no current
 * representation). If-Match uses the strong comparison (a weak `W/` tag never matches),
 * If-None-Match the weak one; `*` matches any current representation (RFC 9110 §13.1.1-2).
 */
export function etagListMatches(header: string, etag: string | null, comparison: 'strong' | 'weak'): boolean {
  if (etag === null) return false;
  if (header.trim() === '*') return true;
  const opaque = (tag: string) => (comparison === 'weak' ? tag.replace(/^W\//, '') : tag);
  return header.split(',').some((candidate) => opaque(candidate.trim()) === opaque(etag));
}

/** An upload's session ended or moved on (cancelled, purged, or written by another request) while a request finished it. */
function uploadChanged(repository: string, id: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id} of ${repository} was cancelled or changed while it finished`);
}

/** An upload whose bytes hash to `actual`, not to the digest its client named. */
function uploadDigestMismatch(expected: Digest, actual: string): RegistryError {
  return new RegistryError('DIGEST_INVALID', `upload content has digest ${actual}, not ${expected.value}`, {
    detail: { expected: expected.value, actual },
  });
}

function blobUnknown(digest: Digest): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', `blob ${digest.value} is unknown`, { detail: { digest: digest.value } });
}

function manifestUnknown(reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', `manifest ${reference} is unknown`, { detail: { reference } });
}

/** A small LRU of immutable bytes (manifests by digest), bounded by total size. */
class ByteLru {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;
  constructor(private readonly capacity: number) {}

  /** Removes and returns an entry. */
  take(key: string): Buffer | undefined {
    const value = this.entries.get(key);
    if (value) {
      this.entries.delete(key);
      this.bytes -= value.length;
    }
    return value;
  }

  get(key: string): Buffer | undefined {
    const value = this.entries.get(key);
    if (value) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  /**
   * Keeps `value` in memory of its own: a small Buffer is usually a slice of Node's shared 8 KiB
   * pool (Buffer.concat, socket reads), and keeping the slice would keep the whole slab (an
   * 8 KiB slab for each 600-byte manifest, measured).
   */
  set(key: string, value: Buffer): void {
    if (value.length > this.capacity / 16 || this.entries.has(key)) return;
    this.entries.set(key, ownMemory(value));
    this.bytes += value.length;
    for (const [oldKey, oldValue] of this.entries) {
      if (this.bytes <= this.capacity) break;
      this.entries.delete(oldKey);
      this.bytes -= oldValue.length;
    }
  }
}
