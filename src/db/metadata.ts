/**
 * Data access for the registry tables. This module is the only writer of repositories,
 * blobs, repository_blobs, manifests, manifest_references, tags and uploads.
 */
import { advisoryLock, whereSet, type Database, type Queryable } from './database.js';

export type ContentState = 'staged' | 'committed';
/**
 * Where content's bytes are: in the blob store's area for its state, or `inline` in its row
 * of the database (manifests, and blobs uploaded with at most 64 KiB), where a commit has no
 * bytes to move.
 */
export type ContentLocation = ContentState | 'inline';

export interface BlobRecord {
  digest: string;
  size: number;
  /** Staged or committed (global per digest); for content in the blob store, also its area. */
  state: ContentState;
  /** The bytes are in the database row (a manifest or a small blob), not in the blob store. */
  inline: boolean;
}

/** Where a content record's bytes are. */
export function locationOf(blob: Pick<BlobRecord, 'state' | 'inline'>): ContentLocation {
  return blob.inline ? 'inline' : blob.state;
}

export interface RepositoryBlob extends BlobRecord {
  /** Referenced by an admitted manifest of this repository: readers may see it. */
  committedInRepository: boolean;
  /** The upload whose staged bytes are not known to be on disk yet (see finishUpload), or null. */
  flushPending: string | null;
}

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  subjectDigest: string | null;
  annotations: Record<string, string> | null;
  state: ContentState;
}

export interface ManifestReference {
  digest: string;
  kind: 'config' | 'layer' | 'manifest';
}

export interface NewManifest extends Omit<ManifestRecord, 'state'> {
  references: ManifestReference[];
  /** The manifest's bytes, kept in its content row (unless that content is already stored). */
  body?: Buffer;
}

export interface UploadRecord {
  id: string;
  repository: string;
  size: number;
  createdAt: Date;
  updatedAt: Date;
}

interface ManifestRow {
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  subject_digest: string | null;
  annotations: Record<string, string> | null;
  state: ContentState;
}

/**
 * A check of a conditional manifest PUT (If-Match / If-None-Match), given what each of its
 * tags names now (null: nothing); it throws to refuse the PUT.
 */
export type TagPrecondition = (current: ReadonlyMap<string, string | null>) => void;

/** Lock key space for per-tag advisory locks (the second key is a hash of repository and tag). */
const TAG_LOCK = 0x7461;

const MANIFEST_COLUMNS = 'm.digest, m.media_type, m.size, m.artifact_type, m.subject_digest, m.annotations, m.state';

function toManifest(row: ManifestRow): ManifestRecord {
  return {
    digest: row.digest,
    mediaType: row.media_type,
    size: row.size,
    artifactType: row.artifact_type,
    subjectDigest: row.subject_digest,
    annotations: row.annotations,
    state: row.state,
  };
}

/** The manifest's row in `state` (returned when new) and its references, as CTEs of a statement with manifestParams. */
function manifestRows(state: ContentState): string {
  return `manifest AS (
      INSERT INTO manifests (repository_id, digest, media_type, size, artifact_type, subject_digest, annotations, state)
      VALUES ($1, $2, $3, $4, $5, $6, $7, '${state}') ON CONFLICT (repository_id, digest) DO NOTHING RETURNING digest),
    refs AS (
      INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
      SELECT $1, $2, r.child, r.kind FROM unnest($8::text[], $9::text[]) AS r(child, kind) ON CONFLICT DO NOTHING)`;
}

/** Whether the manifest was new, and its content row as it was before the statement (which its SELECT sees). */
const STORED_BEFORE = `SELECT (SELECT count(*)::int FROM manifest) AS created, b.state AS stored_state, b.body IS NOT NULL AS stored_inline
  FROM (SELECT 1) AS one LEFT JOIN blobs b ON b.digest = $2`;

/**
 * CTEs that make content committed (the digests `content` names) and its links in repository
 * $1 (those `links` names). Content and links are shared: images pushed side by side name the
 * same layers, and on PostgreSQL their commits run at once. Each statement locks the rows it
 * flips in digest order before it flips them (the updates alone went in the order of their
 * plan, which differed between sessions as a new table's statistics came in: two commits each
 * held one layer's row and waited for the other's, and PostgreSQL ended one with "deadlock
 * detected").
 */
function contentSwitch(content: string, links: string): string {
  return `content_rows AS (
      SELECT digest FROM blobs WHERE digest = ANY(${content}) AND state <> 'committed' ORDER BY digest FOR UPDATE),
    content_flip AS (
      UPDATE blobs SET state = 'committed' WHERE digest IN (SELECT digest FROM content_rows)),
    link_rows AS (
      SELECT digest FROM repository_blobs WHERE repository_id = $1 AND digest = ANY(${links}) AND NOT committed ORDER BY digest FOR UPDATE),
    link_flip AS (
      UPDATE repository_blobs SET committed = true WHERE repository_id = $1 AND digest IN (SELECT digest FROM link_rows))`;
}

/**
 * The visible switch of commitManifests ($1 repository, $2 content, $3 manifests): content,
 * links and manifests become committed, and the pending tags that name the manifests are taken
 * (`moved`) for the statement to make visible.
 */
const SWITCH = `WITH ${contentSwitch('$2::text[]', '$2::text[]')},
  flipped AS (
    UPDATE manifests SET state = 'committed' WHERE repository_id = $1 AND digest = ANY($3::text[]) AND state <> 'committed'),
  moved AS (
    DELETE FROM pending_tags WHERE repository_id = $1 AND manifest_digest = ANY($3::text[]) RETURNING name, manifest_digest)`;

/**
 * Stores a manifest staged, in one statement: the bytes as content linked to the repository,
 * the manifest, its references and its pending tags (foreign keys are checked at the
 * statement's end). Its SELECT sees the tables as they were before it: the content row stored
 * earlier, if any.
 */
const STORE_STAGED = `WITH content AS (INSERT INTO blobs (digest, size, state, body) VALUES ($2, $4, 'staged', $11) ON CONFLICT (digest) DO NOTHING),
  link AS (INSERT INTO repository_blobs (repository_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING),
  ${manifestRows('staged')},
  pending AS (
    INSERT INTO pending_tags (repository_id, name, manifest_digest) SELECT $1, t, $2 FROM unnest($10::text[]) AS t
    ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = EXCLUDED.manifest_digest, updated_at = now())
  ${STORED_BEFORE}`;

/**
 * Stores an admitted manifest committed, in one statement (putAdmittedManifest). Content rows
 * that are there already flip as the usual switch flips them (contentSwitch), the manifest's
 * own among them, locked in digest order with the others: an upsert of its row first could
 * meet a commit of the same content elsewhere on PostgreSQL in the other order.
 */
const STORE_COMMITTED = `WITH content AS (
    INSERT INTO blobs (digest, size, state, body) VALUES ($2, $4, 'committed', $11) ON CONFLICT (digest) DO NOTHING),
  link AS (
    INSERT INTO repository_blobs (repository_id, digest, committed) VALUES ($1, $2, true)
    ON CONFLICT (repository_id, digest) DO UPDATE SET committed = true WHERE NOT repository_blobs.committed),
  ${manifestRows('committed')},
  ${contentSwitch('array_append($12::text[], $2)', '$12::text[]')},
  superseded AS (
    DELETE FROM pending_tags WHERE repository_id = $1 AND name = ANY($10::text[])),
  tagged AS (
    INSERT INTO tags (repository_id, name, manifest_digest) SELECT $1, t, $2 FROM unnest($10::text[]) AS t
    ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = EXCLUDED.manifest_digest, updated_at = now())
  ${STORED_BEFORE}`;

/** The parameters $1-$11 of the statements that store a manifest. */
function manifestParams(repoId: number, manifest: NewManifest, sortedTags: string[]): unknown[] {
  return [
    repoId,
    manifest.digest,
    manifest.mediaType,
    manifest.size,
    manifest.artifactType,
    manifest.subjectDigest,
    manifest.annotations ? JSON.stringify(manifest.annotations) : null,
    manifest.references.map((r) => r.digest),
    manifest.references.map((r) => r.kind),
    sortedTags,
    manifest.body ?? null,
  ];
}

export class MetadataStore {
  /** Ids of repositories known to be committed (rows are never renumbered; repositories are not deleted). */
  private readonly repositoryIds = new Map<string, number>();
  /**
   * Manifest lookups by digest and tag, and tag listings, kept only for the embedded database: this process is
   * its only writer, and PGlite runs queries and transactions one at a time. Every write to
   * manifests or tags bumps the generation; an entry counts only if filled in the current one
   * (the generation is read before the query, so a lookup racing a write is never kept).
   */
  private readonly lookups: Map<string, { generation: number; value: unknown }> | null;
  private generation = 0;

  constructor(readonly db: Database) {
    this.lookups = db.kind === 'pglite' ? new Map() : null;
  }

  /** Forgets cached lookups; called by every write to manifests, tags or pending tags. */
  invalidate(): void {
    this.generation++;
    this.lookups?.clear();
  }

  private async lookup<T>(key: string, load: () => Promise<T>): Promise<T> {
    if (!this.lookups) return load();
    const hit = this.lookups.get(key);
    if (hit && hit.generation === this.generation) return hit.value as T;
    const generation = this.generation;
    const value = await load();
    if (generation === this.generation) {
      if (this.lookups.size >= 10_000) this.lookups.clear();
      this.lookups.set(key, { generation, value });
    }
    return value;
  }

  async ensureRepository(name: string, q: Queryable = this.db): Promise<number> {
    const cached = this.repositoryIds.get(name);
    if (cached !== undefined) return cached;
    // A row this very transaction inserted (created_at = now()) may still roll back: not cached.
    const existing = await q.query<{ id: number; settled: boolean }>(
      'SELECT id, created_at < now() AS settled FROM repositories WHERE name = $1',
      [name],
    );
    if (existing.length > 0) {
      if (existing[0].settled) this.repositoryIds.set(name, existing[0].id);
      return existing[0].id;
    }
    const rows = await q.query<{ id: number }>(
      `INSERT INTO repositories (name) VALUES ($1)
       ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id`,
      [name],
    );
    return rows[0].id;
  }

  /**
   * Runs `fn` with the repository's id: as a standalone statement when the id is known, else
   * in a transaction that may create the repository (and so never leaves a statement that
   * needs it behind a repository that rolled back).
   */
  private withRepository<T>(name: string, fn: (q: Queryable, repositoryId: number) => Promise<T>): Promise<T> {
    const known = this.repositoryIds.get(name);
    if (known !== undefined) return fn(this.db, known);
    return this.db.transaction(async (tx) => fn(tx, await this.ensureRepository(name, tx)));
  }

  async repositoryId(name: string): Promise<number | null> {
    const cached = this.repositoryIds.get(name);
    if (cached !== undefined) return cached;
    const rows = await this.db.query<{ id: number }>('SELECT id FROM repositories WHERE name = $1', [name]);
    if (rows.length === 0) return null;
    this.repositoryIds.set(name, rows[0].id);
    return rows[0].id;
  }

  /**
   * Repository names in byte order strictly after `last`, at most `limit`, each with
   * whether it holds an admitted manifest (readers see only those).
   */
  async listRepositories(last: string | undefined, limit: number): Promise<Array<{ name: string; committed: boolean }>> {
    const after = whereSet([['r.name > ?::text', last]], 2);
    const rows = await this.db.query<{ name: string; committed: boolean }>(
      `SELECT r.name,
              EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id AND m.state = 'committed') AS committed
         FROM repositories r
        WHERE ${after.sql} AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
        ORDER BY r.name LIMIT $1`,
      [limit, ...after.params],
    );
    return rows;
  }

  // ---- uploads ------------------------------------------------------------------------

  async createUpload(id: string, repository: string): Promise<void> {
    await this.withRepository(repository, (q, repoId) => q.query('INSERT INTO uploads (id, repository_id) VALUES ($1, $2)', [id, repoId]));
  }

  async getUpload(id: string): Promise<UploadRecord | null> {
    const rows = await this.db.query<{ id: string; name: string; size: number; created_at: Date; updated_at: Date }>(
      `SELECT u.id, r.name, u.size, u.created_at, u.updated_at
         FROM uploads u JOIN repositories r ON r.id = u.repository_id WHERE u.id = $1`,
      [id],
    );
    if (rows.length === 0) return null;
    const row = rows[0];
    return { id: row.id, repository: row.name, size: row.size, createdAt: row.created_at, updatedAt: row.updated_at };
  }

  /** Moves an upload's size from `expected` to `size`; false when someone else moved it first. */
  async advanceUpload(id: string, expected: number, size: number): Promise<boolean> {
    const rows = await this.db.query<{ id: string }>(
      'UPDATE uploads SET size = $3, updated_at = now() WHERE id = $1 AND size = $2 RETURNING id',
      [id, expected, size],
    );
    return rows.length > 0;
  }

  /**
   * Ends an upload whose bytes are now staged content: deletes the session and records and
   * links the content to the session's repository, in one statement. The session must still
   * be at `recorded` bytes (the size the finishing request read; a last chunk it wrote is not
   * recorded first). False when the session is gone (cancelled meanwhile) or was moved by
   * another writer: then nothing is linked.
   *
   * With `body` (a small blob's verified bytes) the content is kept in its row rather than in
   * the blob store. A record that is there already keeps its bytes where they are, unless it
   * has none in its row and the caller found its file gone: then the row takes them.
   *
   * `unflushed`: the upload's bytes were staged before they were flushed to disk; the record
   * names the upload as the flush pending (also when it was there already: the staged file was
   * replaced) until markFlushed clears it.
   */
  async finishUpload(
    id: string,
    digest: string,
    size: number,
    recorded: number,
    body: Buffer | null = null,
    q: Queryable = this.db,
    unflushed = false,
  ): Promise<boolean> {
    const rows = await q.query<{ finished: number }>(
      `WITH done AS (DELETE FROM uploads WHERE id = $1 AND size = $4 RETURNING repository_id),
         content AS (INSERT INTO blobs (digest, size, state, body, flush_pending) SELECT $2, $3, 'staged', $5::bytea, $6 FROM done
                     ON CONFLICT (digest) DO UPDATE SET body = COALESCE(blobs.body, EXCLUDED.body), flush_pending = COALESCE(EXCLUDED.flush_pending, blobs.flush_pending)
                     WHERE (blobs.body IS NULL AND EXCLUDED.body IS NOT NULL) OR EXCLUDED.flush_pending IS NOT NULL),
         link AS (INSERT INTO repository_blobs (repository_id, digest) SELECT repository_id, $2 FROM done ON CONFLICT DO NOTHING)
       SELECT count(*)::int AS finished FROM done`,
      [id, digest, size, recorded, body, unflushed ? id : null],
    );
    return rows[0].finished > 0;
  }

  /**
   * Records that the bytes each upload staged under its digest are on disk (unless a later
   * upload's are pending since). The rows are locked in digest order, as a commit locks them
   * (commitManifests): on PostgreSQL a batch of an image's layers is marked while the commit
   * of a manifest naming them may run.
   */
  async markFlushed(flushed: Array<{ digest: string; upload: string }>, q: Queryable = this.db): Promise<void> {
    if (flushed.length === 0) return;
    await q.query(
      `WITH flushed AS (
         SELECT b.digest FROM blobs b JOIN unnest($1::text[], $2::text[]) AS f(digest, upload) ON b.digest = f.digest AND b.flush_pending = f.upload
          ORDER BY b.digest FOR UPDATE OF b)
       UPDATE blobs SET flush_pending = NULL WHERE digest IN (SELECT digest FROM flushed)`,
      [flushed.map((f) => f.digest), flushed.map((f) => f.upload)],
    );
  }

  /** Content whose bytes are not known to be on disk (see finishUpload's `unflushed`). */
  async unflushedBlobs(): Promise<Array<BlobRecord & { flushPending: string }>> {
    return this.db.query<BlobRecord & { flushPending: string }>(
      `SELECT digest, size, state, body IS NOT NULL AS inline, flush_pending AS "flushPending" FROM blobs WHERE flush_pending IS NOT NULL ORDER BY digest`,
    );
  }

  /**
   * Forgets content whose bytes could not be flushed (its record and every repository's link
   * to it), if the same upload's flush is still the one pending. False when it was not.
   */
  async forgetUnflushedBlob(digest: string, upload: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<{ digest: string }>('SELECT digest FROM blobs WHERE digest = $1 AND flush_pending = $2 FOR UPDATE', [digest, upload]);
      if (rows.length === 0) return false;
      await tx.query('DELETE FROM repository_blobs WHERE digest = $1', [digest]);
      await tx.query('DELETE FROM blobs WHERE digest = $1', [digest]);
      return true;
    });
  }

  async deleteUpload(id: string): Promise<boolean> {
    const rows = await this.db.query<{ id: string }>('DELETE FROM uploads WHERE id = $1 RETURNING id', [id]);
    return rows.length > 0;
  }

  async staleUploads(olderThan: Date): Promise<string[]> {
    const rows = await this.db.query<{ id: string }>('SELECT id FROM uploads WHERE updated_at < $1', [olderThan]);
    return rows.map((r) => r.id);
  }

  async uploadExists(id: string): Promise<boolean> {
    return (await this.db.query('SELECT 1 FROM uploads WHERE id = $1', [id])).length > 0;
  }

  // ---- blobs --------------------------------------------------------------------------

  /** The content a repository may serve under `digest`, with its state. */
  async findBlob(repository: string, digest: string): Promise<RepositoryBlob | null> {
    return (await this.findBlobs(repository, [digest])).get(digest) ?? null;
  }

  /** Global content record (any repository). */
  async getBlob(digest: string, q: Queryable = this.db): Promise<BlobRecord | null> {
    const rows = await q.query<BlobRecord>('SELECT digest, size, state, body IS NOT NULL AS inline FROM blobs WHERE digest = $1', [digest]);
    return rows[0] ?? null;
  }

  /** The bytes of content kept in the database (a manifest or a small blob), or null when they are in the blob store. */
  async inlineBody(digest: string): Promise<Buffer | null> {
    const rows = await this.db.query<{ body: Uint8Array | null }>('SELECT body FROM blobs WHERE digest = $1', [digest]);
    const body = rows[0]?.body;
    return body ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : null;
  }

  /**
   * Records content (staged unless it already exists) and links it to the repository. With
   * `body`, the content's bytes are kept in its row, as finishUpload keeps a small blob's.
   */
  async linkBlob(repository: string, digest: string, size: number, q?: Queryable, body: Buffer | null = null): Promise<void> {
    const link = (on: Queryable, repoId: number) =>
      on.query(
        `WITH content AS (INSERT INTO blobs (digest, size, state, body) VALUES ($2, $3, 'staged', $4::bytea)
                          ON CONFLICT (digest) DO UPDATE SET body = EXCLUDED.body WHERE blobs.body IS NULL AND EXCLUDED.body IS NOT NULL)
         INSERT INTO repository_blobs (repository_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
        [repoId, digest, size, body],
      );
    if (q) await link(q, await this.ensureRepository(repository, q));
    else await this.withRepository(repository, link);
  }

  /** Blobs of `digests` the repository holds, each with its state (one query for a whole manifest). */
  async findBlobs(repository: string, digests: string[]): Promise<Map<string, RepositoryBlob>> {
    if (digests.length === 0) return new Map();
    const repoId = await this.repositoryId(repository);
    if (repoId === null) return new Map();
    const rows = await this.db.query<{ digest: string; size: number; state: ContentState; inline: boolean; committed: boolean; flushPending: string | null }>(
      `SELECT b.digest, b.size, b.state, b.body IS NOT NULL AS inline, rb.committed, b.flush_pending AS "flushPending" FROM repository_blobs rb
         JOIN blobs b ON b.digest = rb.digest
        WHERE rb.repository_id = $1 AND rb.digest = ANY($2::text[])`,
      [repoId, digests],
    );
    return new Map(rows.map(({ committed, ...blob }) => [blob.digest, { ...blob, committedInRepository: committed }]));
  }

  /** Where the bytes of content are, by digest (global), for the commit of several digests. */
  async contentLocations(digests: string[]): Promise<Map<string, ContentLocation>> {
    if (digests.length === 0) return new Map();
    const rows = await this.db.query<{ digest: string; state: ContentState; inline: boolean }>(
      'SELECT digest, state, body IS NOT NULL AS inline FROM blobs WHERE digest = ANY($1::text[])',
      [digests],
    );
    return new Map(rows.map((r) => [r.digest, locationOf(r)]));
  }

  async unlinkBlob(repository: string, digest: string, inTransaction?: (tx: Queryable) => Promise<void>): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<{ digest: string }>(
        `DELETE FROM repository_blobs rb USING repositories r
          WHERE rb.repository_id = r.id AND r.name = $1 AND rb.digest = $2 RETURNING rb.digest`,
        [repository, digest],
      );
      if (rows.length > 0 && inTransaction) await inTransaction(tx);
      return rows.length > 0;
    });
  }

  // ---- manifests ----------------------------------------------------------------------

  /**
   * Stores a manifest (staged) with its references, links its bytes as content (kept in the
   * content row, unless that content is already stored), and records the tags the push asked
   * for as pending (only pushers resolve them until the commit). `inTransaction` runs in the
   * same transaction (the audit record of the push). Says whether the manifest is new in the
   * repository and where its content's bytes are.
   */
  async putManifest(
    repository: string,
    manifest: NewManifest,
    tags: string[] = [],
    inTransaction?: (tx: Queryable) => Promise<void>,
    precondition?: TagPrecondition,
  ): Promise<{ created: boolean; content: ContentLocation }> {
    this.invalidate();
    // In name order: two pushes of the same tags lock them, and write their rows, in one order (no deadlock).
    const sortedTags = [...tags].sort();
    return this.db.transaction(async (tx) => {
      const repoId = await this.ensureRepository(repository, tx);
      if (precondition) precondition(await this.lockTags(tx, repoId, repository, sortedTags));
      const rows = await tx.query<{ created: number; stored_state: ContentState | null; stored_inline: boolean | null }>(
        STORE_STAGED,
        manifestParams(repoId, manifest, sortedTags),
      );
      if (inTransaction) await inTransaction(tx);
      const { created, stored_state: state, stored_inline: inline } = rows[0];
      const content: ContentLocation = state ? locationOf({ state, inline: Boolean(inline) }) : manifest.body ? 'inline' : 'staged';
      return { created: created > 0, content };
    });
  }

  /**
   * Stores an admitted manifest that is new in the repository committed, in one statement: its
   * bytes as content linked to the repository, the manifest, its references, and its tags,
   * visible at once (a pending push of the same tags is superseded); the content it references
   * (`contentDigests`) becomes committed in the repository. `beforeStore` runs first in the
   * transaction, `inTransaction` after the statement (the admission and the audit records).
   * Returns false, keeping nothing, when the manifest is already in the repository or its bytes
   * are a staged file (that path moves them first).
   */
  async putAdmittedManifest(
    repository: string,
    manifest: NewManifest,
    contentDigests: string[],
    tags: string[],
    hooks: { beforeStore: (tx: Queryable) => Promise<void>; inTransaction: (tx: Queryable, repositoryId: number) => Promise<void> },
    precondition?: TagPrecondition,
  ): Promise<boolean> {
    this.invalidate();
    const sortedTags = [...tags].sort();
    const notNew = new Error('not new');
    try {
      return await this.db.transaction(async (tx) => {
        const repoId = await this.ensureRepository(repository, tx);
        if (precondition) precondition(await this.lockTags(tx, repoId, repository, sortedTags));
        await hooks.beforeStore(tx);
        const [row] = await tx.query<{ created: number; stored_state: ContentState | null; stored_inline: boolean | null }>(
          STORE_COMMITTED,
          [...manifestParams(repoId, manifest, sortedTags), contentDigests],
        );
        // Its SELECT saw the tables as they were before it: a staged file is not this path's to commit.
        if (row.created === 0 || (row.stored_state === 'staged' && !row.stored_inline)) throw notNew;
        await hooks.inTransaction(tx, repoId);
        return true;
      });
    } catch (err) {
      if (err === notNew) return false;
      throw err;
    }
  }

  /**
   * Locks the tags, given in name order, until the transaction ends, and says what each names
   * now: the pending push if there is one, else the committed manifest, else null.
   */
  private async lockTags(tx: Queryable, repoId: number, repository: string, sortedTags: string[]): Promise<Map<string, string | null>> {
    for (const tag of sortedTags) await advisoryLock(this.db, tx, TAG_LOCK, `${repository}:${tag}`);
    const rows = await tx.query<{ name: string; digest: string | null }>(
      `SELECT t.name, coalesce(p.manifest_digest, c.manifest_digest) AS digest FROM unnest($2::text[]) AS t(name)
         LEFT JOIN pending_tags p ON p.repository_id = $1 AND p.name = t.name
         LEFT JOIN tags c ON c.repository_id = $1 AND c.name = t.name`,
      [repoId, sortedTags],
    );
    return new Map(rows.map((r) => [r.name, r.digest]));
  }

  async getManifest(repository: string, digest: string): Promise<ManifestRecord | null> {
    return this.lookup(`d\u0000${repository}\u0000${digest}`, () => this.loadManifest(repository, digest));
  }

  private async loadManifest(repository: string, digest: string): Promise<ManifestRecord | null> {
    const rows = await this.db.query<ManifestRow>(
      `SELECT ${MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repository_id
        WHERE r.name = $1 AND m.digest = $2`,
      [repository, digest],
    );
    return rows.length > 0 ? toManifest(rows[0]) : null;
  }

  /** The manifest a tag names; with `includePending`, a pending tag (the newest push) wins. */
  async getManifestByTag(repository: string, tag: string, includePending = false): Promise<ManifestRecord | null> {
    return this.lookup(`t\u0000${repository}\u0000${tag}\u0000${includePending}`, () => this.loadManifestByTag(repository, tag, includePending));
  }

  private async loadManifestByTag(repository: string, tag: string, includePending: boolean): Promise<ManifestRecord | null> {
    if (includePending) {
      const pending = await this.db.query<ManifestRow>(
        `SELECT ${MANIFEST_COLUMNS} FROM pending_tags t
           JOIN repositories r ON r.id = t.repository_id
           JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
          WHERE r.name = $1 AND t.name = $2`,
        [repository, tag],
      );
      if (pending.length > 0) return toManifest(pending[0]);
    }
    const rows = await this.db.query<ManifestRow>(
      `SELECT ${MANIFEST_COLUMNS} FROM tags t
         JOIN repositories r ON r.id = t.repository_id
         JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
        WHERE r.name = $1 AND t.name = $2`,
      [repository, tag],
    );
    return rows.length > 0 ? toManifest(rows[0]) : null;
  }

  /**
   * The visible switch of a commit, in one transaction: the content is marked committed,
   * the manifest is marked committed, and the tags point at it.
   */
  async commitManifest(repository: string, digest: string, contentDigests: string[], tags: string[]): Promise<void> {
    await this.db.transaction((tx) => this.commitManifests(tx, repository, [{ digest, contentDigests }], tags, digest));
  }

  /**
   * The visible switch for several manifests (an index with its children and evidence) inside
   * the caller's transaction: content and manifests become committed in this repository, the
   * pending tags that still name them become visible, and `tags` point at `tagTarget`.
   * Returns the tags made visible.
   */
  async commitManifests(
    tx: Queryable,
    repository: string,
    manifests: Array<{ digest: string; contentDigests: string[] }>,
    tags: string[] = [],
    tagTarget?: string,
  ): Promise<Array<{ tag: string; digest: string }>> {
    this.invalidate();
    const repoId = await this.ensureRepository(repository, tx);
    const digests = manifests.map((m) => m.digest);
    const content = [...new Set([...digests, ...manifests.flatMap((m) => m.contentDigests)])];
    if (!tagTarget) {
      // Nothing else to tag: the taken tags become visible in the same statement.
      return tx.query<{ tag: string; digest: string }>(
        `${SWITCH},
         tagged AS (
           INSERT INTO tags (repository_id, name, manifest_digest) SELECT $1, name, manifest_digest FROM moved
           ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = EXCLUDED.manifest_digest, updated_at = now())
         SELECT name AS tag, manifest_digest AS digest FROM moved`,
        [repoId, content, digests],
      );
    }
    const moved = await tx.query<{ tag: string; digest: string }>(`${SWITCH} SELECT name AS tag, manifest_digest AS digest FROM moved`, [
      repoId,
      content,
      digests,
    ]);
    const visible = [...moved];
    for (const tag of tags) if (!visible.some((v) => v.tag === tag)) visible.push({ tag, digest: tagTarget });
    // A tag set directly on committed content is the newest push of that tag.
    if (tags.length > 0) {
      await tx.query('DELETE FROM pending_tags WHERE repository_id = $1 AND name = ANY($2::text[])', [repoId, tags]);
    }
    if (visible.length > 0) {
      await tx.query(
        `INSERT INTO tags (repository_id, name, manifest_digest)
         SELECT $1, t.name, t.digest FROM unnest($2::text[], $3::text[]) AS t(name, digest)
         ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = EXCLUDED.manifest_digest, updated_at = now()`,
        [repoId, visible.map((v) => v.tag), visible.map((v) => v.digest)],
      );
    }
    return visible;
  }

  /** Deletes a manifest and every tag pointing at it. */
  async deleteManifest(repository: string, digest: string, inTransaction?: (tx: Queryable) => Promise<void>): Promise<boolean> {
    this.invalidate();
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<{ digest: string }>(
        `DELETE FROM manifests m USING repositories r
          WHERE m.repository_id = r.id AND r.name = $1 AND m.digest = $2 RETURNING m.digest`,
        [repository, digest],
      );
      if (rows.length === 0) return false;
      await tx.query(
        `DELETE FROM repository_blobs rb USING repositories r
          WHERE rb.repository_id = r.id AND r.name = $1 AND rb.digest = $2`,
        [repository, digest],
      );
      if (inTransaction) await inTransaction(tx);
      return true;
    });
  }

  // ---- tags ---------------------------------------------------------------------------

  async deleteTag(repository: string, tag: string, inTransaction?: (tx: Queryable) => Promise<void>): Promise<boolean> {
    this.invalidate();
    return this.db.transaction(async (tx) => {
      let deleted = 0;
      for (const table of ['tags', 'pending_tags']) {
        const rows = await tx.query<{ name: string }>(
          `DELETE FROM ${table} t USING repositories r WHERE t.repository_id = r.id AND r.name = $1 AND t.name = $2
           RETURNING t.name`,
          [repository, tag],
        );
        deleted += rows.length;
      }
      if (deleted > 0 && inTransaction) await inTransaction(tx);
      return deleted > 0;
    });
  }

  /**
   * Tag names in byte order, strictly after `last`, at most `limit`. Readers see tags of
   * admitted manifests only; pushers (`includeStaged`) also see tags pending admission.
   */
  async listTags(repository: string, last: string | undefined, limit: number, includeStaged = true): Promise<readonly string[]> {
    const after = whereSet([['name > ?::text', last]], 3);
    const branch = (table: string) => `SELECT name FROM ${table} WHERE repository_id = (SELECT id FROM repositories WHERE name = $1) AND ${after.sql}`;
    const source = includeStaged ? `${branch('tags')} UNION ${branch('pending_tags')}` : branch('tags');
    // One aggregated row instead of one row per tag: PGlite spends most of a long listing on rows.
    // Tag names never contain a newline (tag grammar), so it separates them safely.
    const load = async () => {
      const rows = await this.db.query<{ names: string | null }>(
        `SELECT string_agg(name, E'\n' ORDER BY name) AS names FROM (${source} ORDER BY name LIMIT $2) page`,
        [repository, limit, ...after.params],
      );
      return Object.freeze(rows[0]?.names ? rows[0].names.split('\n') : []);
    };
    // One frozen array per page (the registry caps pages), shared by every reader of the cache.
    return this.lookup(`tags\0${includeStaged}\0${limit}\0${last ?? ''}\0${repository}`, load);
  }

  // ---- referrers ----------------------------------------------------------------------

  /**
   * In one query: manifests whose `subject` is `subject`, and manifests the given tags
   * (visible or pending) name, each with the tag that found it (null for referrers).
   */
  async subjectAndTagged(repository: string, subject: string, tags: string[]): Promise<Array<{ tag: string | null; record: ManifestRecord }>> {
    const repoId = await this.repositoryId(repository);
    if (repoId === null) return [];
    const rows = await this.db.query<ManifestRow & { tag: string | null }>(
      `SELECT NULL::text AS tag, ${MANIFEST_COLUMNS} FROM manifests m WHERE m.repository_id = $1 AND m.subject_digest = $2
       UNION ALL
       SELECT t.name AS tag, ${MANIFEST_COLUMNS} FROM (
           SELECT name, manifest_digest FROM tags WHERE repository_id = $1 AND name = ANY($3::text[])
           UNION SELECT name, manifest_digest FROM pending_tags WHERE repository_id = $1 AND name = ANY($3::text[])) t
         JOIN manifests m ON m.repository_id = $1 AND m.digest = t.manifest_digest`,
      [repoId, subject, tags],
    );
    return rows.map((row) => ({ tag: row.tag, record: toManifest(row) }));
  }

  async listReferrers(repository: string, subject: string): Promise<ManifestRecord[]> {
    const rows = await this.db.query<ManifestRow>(
      `SELECT ${MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repository_id
        WHERE r.name = $1 AND m.subject_digest = $2 ORDER BY m.created_at, m.digest`,
      [repository, subject],
    );
    return rows.map(toManifest);
  }

  async getManifests(repository: string, digests: string[]): Promise<ManifestRecord[]> {
    if (digests.length === 0) return [];
    const rows = await this.db.query<ManifestRow>(
      `SELECT ${MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repository_id
        WHERE r.name = $1 AND m.digest = ANY($2::text[])`,
      [repository, digests],
    );
    return rows.map(toManifest);
  }
}
