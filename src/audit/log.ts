/**
 * The audit trail. `append` runs inside the transaction of the state change it records, so
 * a failed audit write fails the operation. Appends are serialised so the chain is linear
 * (an advisory lock held to the end of the appending transaction on PostgreSQL; PGlite runs
 * one transaction at a time):
 * hash = sha256(prev_hash + "\n" + canonical JSON of the record's content). The sequence
 * number is the storage order and is not hashed: the chain itself says what follows what,
 * which is how reordering is told from editing.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { advisoryLock, jsonParam, queryPlannedForValues, textParam, whereSet, type Database, type Queryable, type Transaction } from '../db/database.js';
import { canonicalJson } from './canonical.js';

export const GENESIS_HASH = `sha256:${'0'.repeat(64)}`;
const APPEND_LOCK = 0x61756474; // "audt"

export type AuditAction =
  | 'push'
  | 'admission.decision'
  | 'commit'
  | 'expiry'
  | 'delete.manifest'
  | 'delete.tag'
  | 'delete.blob'
  | 'policy.load'
  | 'auth.failure'
  | 'auth.lockout'
  | 'robot.create'
  | 'robot.rotate'
  | 'robot.delete';

export interface AuditEvent {
  action: string;
  repository?: string | null;
  digest?: string | null;
  principal?: string | null;
  requestId?: string | null;
  detail?: Record<string, unknown>;
}

export interface AuditRecord {
  seq: number;
  at: string;
  action: string;
  repository: string | null;
  digest: string | null;
  principal: string | null;
  requestId: string | null;
  detail: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface AuditFilter {
  repository?: string;
  digest?: string;
  principal?: string;
  action?: string;
  since?: Date;
  until?: Date;
  /** Records after this sequence number (paging). */
  after?: number;
  limit: number;
}

export type ProblemKind = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'checkpoint';

export interface VerifyProblem {
  seq: number;
  kind: ProblemKind;
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  checked: number;
  checkpoints: number;
  problems: VerifyProblem[];
}

interface Row {
  seq: number;
  at: Date;
  action: string;
  repository: string | null;
  digest: string | null;
  principal: string | null;
  request_id: string | null;
  detail: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

function toRecord(row: Row): AuditRecord {
  return {
    seq: row.seq,
    at: row.at.toISOString(),
    action: row.action,
    repository: row.repository,
    digest: row.digest,
    principal: row.principal,
    requestId: row.request_id,
    detail: row.detail,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** What the hash covers: everything but the sequence number and the hash itself. */
export function recordHash(record: Omit<AuditRecord, 'seq' | 'hash'> & { seq?: number; hash?: string }): string {
  const { prevHash, seq: _seq, hash: _hash, ...content } = record;
  return chainHash(prevHash, canonicalJson(content));
}

/** A record's hash from its predecessor's hash and the canonical JSON of its content. */
function chainHash(prevHash: string, canonicalContent: string): string {
  return `sha256:${createHash('sha256').update(`${prevHash}\n${canonicalContent}`).digest('hex')}`;
}

function checkpointPayload(seq: number, hash: string, at: string): Buffer {
  return Buffer.from(canonicalJson({ seq, hash, at }));
}

export function keyId(publicKey: KeyObject): string {
  return `sha256:${createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

type AuditHead = { seq: number; hash: string };
/** What a record's hash covers besides its predecessor's hash. */
type RecordContent = Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>;
type Chained = { seq: number; prevHash: string; hash: string };

function isTransaction(q: Queryable): q is Transaction {
  return typeof (q as Partial<Transaction>).afterCommit === 'function';
}

export interface AuditLogOptions {
  /** EC P-256 private key that signs checkpoints; without it no checkpoints are written. */
  checkpointKey?: KeyObject;
  /** A checkpoint after every this many records. */
  checkpointEvery?: number;
  logger?: Logger;
}

export class AuditLog {
  /** PGlite: the head written by the last append of each open transaction. */
  private readonly heads = new WeakMap<Queryable, AuditHead>();
  /** PGlite: the committed head (no other writer can move it). */
  private committedHead: AuditHead | null = null;

  constructor(
    readonly db: Database,
    private readonly options: AuditLogOptions = {},
  ) {}

  /** Appends inside the caller's transaction; throws (and so fails the caller) if it cannot. */
  async append(q: Queryable, event: AuditEvent): Promise<AuditRecord> {
    // Serialised once: what is stored, and (parsed back) what is hashed and returned.
    const detailJson = jsonParam(event.detail ?? {});
    const content = {
      at: new Date().toISOString(),
      action: event.action,
      // A failed login's username is any text the client sent.
      repository: textParam(event.repository ?? null),
      digest: textParam(event.digest ?? null),
      principal: textParam(event.principal ?? null),
      requestId: textParam(event.requestId ?? null),
      detail: JSON.parse(detailJson) as Record<string, unknown>,
    };
    const { seq, prevHash, hash } = this.db.serial ? await this.insertAfterHead(q, content, detailJson) : await this.insertLocked(q, content, detailJson);
    const every = this.options.checkpointEvery ?? 0;
    if (this.options.checkpointKey && every > 0 && seq % every === 0) await this.writeCheckpoint(q, seq, hash);
    return { seq, ...content, prevHash, hash };
  }

  /**
   * PGlite (one transaction at a time): chains to the head this transaction last wrote, or
   * the one the last committed append wrote, or else the newest record.
   */
  private async insertAfterHead(q: Queryable, content: RecordContent, detailJson: string): Promise<Chained> {
    const known = q !== this.db ? (this.heads.get(q) ?? this.committedHead) : null;
    const head = known ?? (await q.query<AuditHead>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1'))[0] ?? null;
    const chained = { seq: head ? head.seq + 1 : 1, prevHash: head ? head.hash : GENESIS_HASH, hash: '' };
    chained.hash = recordHash({ ...content, prevHash: chained.prevHash });
    await q.query(
      `INSERT INTO audit_log (seq, at, action, repository, digest, principal, request_id, detail, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [chained.seq, content.at, content.action, content.repository, content.digest, content.principal, content.requestId, detailJson, chained.prevHash, chained.hash],
    );
    this.wrote(q, { seq: chained.seq, hash: chained.hash });
    return chained;
  }

  /**
   * PostgreSQL: one call takes the append lock (held until the caller's transaction ends),
   * reads the newest record after the lock is granted and inserts the next one, hashed by
   * the server from the content serialised here (migration 010); the hash is checked here.
   */
  private async insertLocked(q: Queryable, content: RecordContent, detailJson: string): Promise<Chained> {
    const canonical = canonicalJson(content);
    const [row] = await q.query<{ seq: number; prev_hash: string; hash: string }>(
      'SELECT seq, prev_hash, hash FROM audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9)',
      [APPEND_LOCK, content.at, content.action, content.repository, content.digest, content.principal, content.requestId, detailJson, canonical],
    );
    if (chainHash(row.prev_hash, canonical) !== row.hash) {
      throw new Error(`audit record ${row.seq}: the database hashed it differently from the gateway`);
    }
    return { seq: row.seq, prevHash: row.prev_hash, hash: row.hash };
  }

  /** Remembers the head an append wrote: for the rest of its transaction, and once it commits. */
  private wrote(q: Queryable, head: AuditHead): void {
    if (q === this.db) {
      this.committedHead = null;
      return;
    }
    this.heads.set(q, head);
    if (isTransaction(q)) q.afterCommit(() => (this.committedHead = head));
  }

  /** For events with no other state change (authentication failures, policy loads). */
  appendNow(event: AuditEvent): Promise<AuditRecord> {
    return this.db.transaction((tx) => this.append(tx, event));
  }

  async head(): Promise<{ seq: number; hash: string } | null> {
    const rows = await this.db.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
    return rows[0] ?? null;
  }

  /** Signs the current head unless the newest checkpoint already covers it. */
  async checkpoint(): Promise<{ seq: number; hash: string } | null> {
    if (!this.options.checkpointKey) return null;
    return this.db.transaction(async (tx) => {
      await advisoryLock(this.db, tx, APPEND_LOCK);
      const head = await tx.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
      if (head.length === 0) return null;
      const done = await tx.query('SELECT 1 FROM audit_checkpoints WHERE seq = $1', [head[0].seq]);
      if (done.length === 0) await this.writeCheckpoint(tx, head[0].seq, head[0].hash);
      return head[0];
    });
  }

  private async writeCheckpoint(q: Queryable, seq: number, hash: string): Promise<void> {
    const key = this.options.checkpointKey as KeyObject;
    const publicKey = createPublicKey(key);
    const at = new Date().toISOString();
    const signature = sign('sha256', checkpointPayload(seq, hash, at), { key, dsaEncoding: 'ieee-p1363' }).toString('base64');
    await q.query(
      `INSERT INTO audit_checkpoints (seq, hash, at, key_id, public_key, signature) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (seq) DO NOTHING`,
      [seq, hash, at, keyId(publicKey), publicKey.export({ type: 'spki', format: 'pem' }), signature],
    );
  }

  async query(filter: AuditFilter): Promise<AuditRecord[]> {
    const where = whereSet([
      ['repository = ?', filter.repository],
      ['digest = ?', filter.digest],
      ['principal = ?', filter.principal],
      ['action = ?', filter.action],
      ['at >= ?', filter.since],
      ['at < ?', filter.until],
      ['seq > ?', filter.after],
    ]);
    const sql = `SELECT * FROM audit_log WHERE ${where.sql} ORDER BY seq LIMIT $${where.params.length + 1}`;
    const params = [...where.params, filter.limit];
    const byTime = filter.since !== undefined || filter.until !== undefined;
    const rows = byTime ? await queryPlannedForValues<Row>(this.db, sql, params) : await this.db.query<Row>(sql, params);
    return rows.map(toRecord);
  }

  /** Writes records as JSON Lines in sequence order, a page at a time. */
  async export(out: Writable, filter: Omit<AuditFilter, 'limit' | 'after'> = {}): Promise<number> {
    let after = 0;
    let count = 0;
    for (;;) {
      const page = await this.query({ ...filter, after, limit: 1000 });
      if (page.length === 0) return count;
      const text = page.map((r) => JSON.stringify(r)).join('\n') + '\n';
      if (!out.write(text)) await new Promise((resolve) => out.once('drain', resolve));
      count += page.length;
      after = page[page.length - 1].seq;
    }
  }

  /**
   * Walks the chain in storage order and names every record that does not fit: content
   * that no longer matches its hash (edited), a predecessor that is gone (deleted), a record
   * the chain skips (inserted), a predecessor stored elsewhere (reordered); then checks each
   * signed checkpoint against the chain. `trustedKey` is the auditor's public key; without
   * it the key stored with each checkpoint is used.
   */
  async verify(range: { from?: number; to?: number } = {}, trustedKey?: KeyObject): Promise<VerifyReport> {
    const rows = await this.readRange(range.from, range.to);
    const problems: VerifyProblem[] = [];
    const position = new Map<string, number>();
    rows.forEach((r, i) => position.set(r.hash, i));
    const firstPrev = rows.length > 0 && range.from && range.from > 1 ? rows[0].prevHash : GENESIS_HASH;
    rows.forEach((row, i) => {
      const { seq: _seq, hash: _hash, ...content } = row;
      if (recordHash(content) !== row.hash) {
        problems.push({ seq: row.seq, kind: 'edited', message: `record ${row.seq} was edited: its content no longer matches its hash` });
      }
      const expected = i === 0 ? firstPrev : rows[i - 1].hash;
      if (row.prevHash === expected) return;
      problems.push(this.chainBreak(rows, i, position));
    });
    for (let i = 1; i < rows.length; i++) {
      if (rows[i].seq !== rows[i - 1].seq + 1) {
        problems.push({ seq: rows[i].seq, kind: 'deleted', message: `records ${rows[i - 1].seq + 1}…${rows[i].seq - 1} are missing before record ${rows[i].seq}` });
      }
    }
    const checkpoints = await this.verifyCheckpoints(rows, trustedKey, problems);
    return { ok: problems.length === 0, checked: rows.length, checkpoints, problems: dedupe(problems) };
  }

  private chainBreak(rows: AuditRecord[], i: number, position: Map<string, number>): VerifyProblem {
    const row = rows[i];
    const before = i > 0 ? rows[i - 1] : null;
    const twoBefore = i > 1 ? rows[i - 2] : null;
    if (before && twoBefore && row.prevHash === twoBefore.hash && before.prevHash === twoBefore.hash) {
      return { seq: before.seq, kind: 'inserted', message: `record ${before.seq} was inserted: the chain goes from record ${twoBefore.seq} straight to record ${row.seq}` };
    }
    const at = position.get(row.prevHash);
    if (at !== undefined) {
      return { seq: row.seq, kind: 'reordered', message: `record ${row.seq} is out of order: it follows record ${rows[at].seq} in the chain but is stored after record ${before?.seq ?? 'none'}` };
    }
    if (before && recordHash(before) !== before.hash) {
      return { seq: before.seq, kind: 'edited', message: `record ${before.seq} was edited or replaced: record ${row.seq} chains to a hash no record has` };
    }
    return { seq: row.seq, kind: 'deleted', message: `the record before record ${row.seq} is missing: its predecessor's hash is in no record` };
  }

  private async verifyCheckpoints(rows: AuditRecord[], trustedKey: KeyObject | undefined, problems: VerifyProblem[]): Promise<number> {
    if (rows.length === 0) return 0;
    const bySeq = new Map(rows.map((r) => [r.seq, r]));
    const checkpoints = await this.db.query<{ seq: number; hash: string; at: Date; key_id: string; public_key: string; signature: string }>(
      'SELECT * FROM audit_checkpoints WHERE seq BETWEEN $1 AND $2 ORDER BY seq',
      [rows[0].seq, rows[rows.length - 1].seq],
    );
    for (const cp of checkpoints) {
      const key = trustedKey ?? createPublicKey(cp.public_key);
      const valid = verify('sha256', checkpointPayload(cp.seq, cp.hash, cp.at.toISOString()), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(cp.signature, 'base64'));
      if (!valid) {
        problems.push({ seq: cp.seq, kind: 'checkpoint', message: `the checkpoint at record ${cp.seq} is not signed by ${trustedKey ? 'the trusted key' : `its key ${cp.key_id}`}` });
        continue;
      }
      const row = bySeq.get(cp.seq);
      if (!row || row.hash !== cp.hash) {
        problems.push({ seq: cp.seq, kind: 'checkpoint', message: `the chain was rewritten: record ${cp.seq} no longer has the hash its signed checkpoint pins` });
      }
    }
    return checkpoints.length;
  }

  private async readRange(from?: number, to?: number): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    let after = (from ?? 1) - 1;
    for (;;) {
      const rows = await this.db.query<Row>(
        'SELECT * FROM audit_log WHERE seq > $1 AND ($2::bigint IS NULL OR seq <= $2) ORDER BY seq LIMIT 5000',
        [after, to ?? null],
      );
      if (rows.length === 0) return out;
      for (const row of rows) out.push(toRecord(row));
      after = rows[rows.length - 1].seq;
    }
  }
}

function dedupe(problems: VerifyProblem[]): VerifyProblem[] {
  const seen = new Set<string>();
  return problems
    .filter((p) => {
      const key = `${p.seq}:${p.kind}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .sort((a, b) => a.seq - b.seq);
}
