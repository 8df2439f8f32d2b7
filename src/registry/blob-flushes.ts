/**
 * Blobs whose bytes reach the disk after their upload is answered (storage.blobFlush=manifest,
 * the default; `upload` flushes them before the 201, as the reference registry does).
 *
 * A blob's 201 says its bytes are verified, staged and recorded. They are flushed in the
 * background, while the client sends its next blob, and a manifest that references the blob is
 * accepted only once they are on disk (settle): the manifest is what makes a push visible, and
 * its 201 is durable with everything it names. Until the flush ends, the blob's record names the
 * upload whose flush is pending (blobs.flush_pending); the flush clears it.
 *
 * A flush that fails forgets the blob (its record and its links): it reads as missing, a
 * manifest that names it is refused as naming unknown content, and the client sends it again.
 * After a crash, start-up (recover) hashes each blob still pending again: whole bytes are
 * flushed and kept, others forgotten with their file. So unflushed bytes are never what a
 * manifest is accepted on, nor what is served after a restart; what a crash can take is a blob
 * no manifest has named yet, which a client's retry sends again (it asks with HEAD first).
 *
 * Why: each 4 MiB layer of an image push waited 3-5 ms after its last byte for its flush, then
 * for the flushes of its directory and of the database's log. In a replay of the bench's 5-layer
 * image push alternating with the reference (README, Benchmarks), an image took 148 ms with the
 * flushes before each 201 and 110 ms with them here, against the reference's 233.
 */
import type { Logger } from 'pino';
import type { Area, BlobStore } from '../storage/blobstore.js';
import { areaOf, BlobNotFoundError, otherArea } from '../storage/blobstore.js';
import type { ContentState, MetadataStore } from '../db/metadata.js';
import { failpoint } from '../admission/failpoints.js';
import { RegistryError } from './errors.js';
import { parseDigest, type Digest } from './names.js';
import { digestStream } from './streams.js';

/** A blob as the manifest path reads it: enough to find its bytes and its pending flush. */
export interface PendingBlob {
  digest: string;
  state: ContentState;
  flushPending: string | null;
}

export interface RecoveryOutcome {
  /** Blobs whose bytes were whole: flushed and kept. */
  kept: number;
  /** Blobs whose bytes were cut, wrong or gone: forgotten. */
  forgotten: number;
}

export class BlobFlushes {
  /** The latest flush started for each digest, until its record is marked. */
  private readonly running = new Map<string, Promise<void>>();
  private readonly toMark: Array<{ digest: string; upload: string; flush: Promise<void> }> = [];
  private marking: Promise<void> | null = null;

  constructor(
    private readonly store: BlobStore,
    private readonly metadata: MetadataStore,
    private readonly logger: Logger,
  ) {}

  /** Starts flushing the bytes `upload` staged unflushed under `digest` (see BlobStore.promoteUpload). */
  start(digest: Digest, upload: string): void {
    failpoint('blob:before-flush');
    this.track(digest.value, upload, this.store.flushContent('staging', digest, upload));
  }

  /**
   * Resolves once the bytes of every blob named are on disk: waits for a flush running here, or
   * flushes a blob whose record says its flush is pending with none running (one a crash or
   * another process left). Throws MANIFEST_BLOB_UNKNOWN when one could not be flushed (it is
   * forgotten by then).
   */
  async settle(blobs: Iterable<PendingBlob>): Promise<void> {
    const waits: Array<Promise<void>> = [];
    for (const blob of blobs) {
      const running = this.running.get(blob.digest);
      if (running) waits.push(running);
      else if (blob.flushPending !== null) waits.push(this.track(blob.digest, blob.flushPending, this.flushWhereItIs(blob)));
    }
    const failed = (await Promise.allSettled(waits)).find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Waits for every flush started and every record to be marked (before the database closes). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
    await this.marking;
  }

  /**
   * After a crash: every blob whose flush was pending is hashed again where its bytes are. Whole
   * bytes are flushed and the record marked; cut, wrong or missing ones are forgotten, with their
   * file. Runs before the gateway serves.
   */
  async recover(): Promise<RecoveryOutcome> {
    const outcome: RecoveryOutcome = { kept: 0, forgotten: 0 };
    for (const blob of await this.metadata.unflushedBlobs()) {
      const digest = parseDigest(blob.digest);
      const area = await this.wholeIn(digest, blob.size, blob.state);
      if (area) {
        await this.store.flushContent(area, digest);
        await this.metadata.markFlushed([{ digest: blob.digest, upload: blob.flushPending }]);
        outcome.kept++;
        continue;
      }
      await this.metadata.forgetUnflushedBlob(blob.digest, blob.flushPending);
      await Promise.all([this.store.delete('staging', digest), this.store.delete('committed', digest)]);
      this.logger.warn({ digest: blob.digest, upload: blob.flushPending }, 'a blob pushed before a crash did not reach the disk whole: forgotten (clients push it again)');
      outcome.forgotten++;
    }
    return outcome;
  }

  /** Follows a flush: marks the record once it is done; forgets the blob when it failed. */
  private track(digest: string, upload: string, flush: Promise<void>): Promise<void> {
    const done: Promise<void> = flush.then(
      (): void => this.queueMark(digest, upload, done),
      (err: Error) => this.forget(digest, upload, err, done),
    );
    done.catch(() => undefined);
    this.running.set(digest, done);
    return done;
  }

  private async forget(digest: string, upload: string, err: Error, flush: Promise<void>): Promise<never> {
    this.logger.error({ err, digest, upload }, "a blob's bytes could not be flushed to disk: forgotten (clients push it again)");
    try {
      await this.metadata.forgetUnflushedBlob(digest, upload);
    } catch (forgetErr) {
      // The record stays pending: the next start-up hashes the bytes again.
      this.logger.error({ err: forgetErr, digest }, 'forgetting an unflushed blob failed');
    }
    this.release(digest, flush);
    throw new RegistryError('MANIFEST_BLOB_UNKNOWN', `blob ${digest} could not be written to disk (${err.message}): push it again`, {
      detail: { missing: [digest] },
    });
  }

  private queueMark(digest: string, upload: string, flush: Promise<void>): void {
    this.toMark.push({ digest, upload, flush });
    this.marking ??= this.markQueued();
  }

  /** Marks flushed records in batches, one statement for all those done meanwhile. */
  private async markQueued(): Promise<void> {
    while (this.toMark.length > 0) {
      const batch = this.toMark.splice(0);
      try {
        await this.metadata.markFlushed(batch.map(({ digest, upload }) => ({ digest, upload })));
      } catch (err) {
        // Only a record is late: the bytes are on disk, and the next start-up hashes them again.
        this.logger.warn({ err, blobs: batch.length }, 'marking flushed blobs failed');
      }
      for (const { digest, flush } of batch) this.release(digest, flush);
    }
    this.marking = null;
  }

  /** Ends the tracking of a flush, unless a later one for the digest replaced it. */
  private release(digest: string, flush: Promise<void> | undefined): void {
    if (this.running.get(digest) === flush) this.running.delete(digest);
  }

  /** Flushes a blob's bytes in the area its state names, or the other one (a commit or an upload may have moved them). */
  private async flushWhereItIs(blob: PendingBlob): Promise<void> {
    const digest = parseDigest(blob.digest);
    const area = areaOf(blob.state);
    try {
      await this.store.flushContent(area, digest);
    } catch (err) {
      if (!(err instanceof BlobNotFoundError)) throw err;
      await this.store.flushContent(otherArea(area), digest);
    }
  }

  /** The area holding the blob's whole bytes (`size` bytes that hash to its digest), or null. */
  private async wholeIn(digest: Digest, size: number, state: ContentState): Promise<Area | null> {
    const first = areaOf(state);
    for (const area of [first, otherArea(first)]) {
      const opened = await this.store.open(area, digest);
      if (!opened) continue;
      if (opened.size !== size) {
        opened.stream.destroy();
        continue;
      }
      const { hex, size: read } = await digestStream(opened.stream, digest.algorithm);
      if (read === size && hex === digest.hex) return area;
    }
    return null;
  }
}
