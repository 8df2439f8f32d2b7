/**
 * Scans for the gate: results cached by (subject digest, database version) in the database,
 * one scan at a time per subject, a bounded worker pool, and recent failures remembered
 * briefly so that a failing scanner does not run again on every evaluation.
 */
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { jsonParam, type Database } from '../db/database.js';
import type { Registry } from '../registry/registry.js';
import type { ScanEvidence } from '../policy/rules/vulnerabilities.js';
import { summarize, type Finding, type ScanResult } from './report.js';
import { ScanError, type TrivyScanner } from './trivy.js';
import { WorkerPool } from './pool.js';
import { writeImageLayout } from './layout.js';

export interface ScanServiceOptions {
  registry: Registry;
  db: Database;
  scanner: TrivyScanner;
  workers: number;
  queueSize: number;
  /** Private directory for layouts and per-worker caches. */
  workDir: string;
  logger: Logger;
  /** How long a failed scan answers from memory before it is tried again. */
  errorTtlMs?: number;
}

export class ScanService {
  readonly pool: WorkerPool;
  private readonly inflight = new Map<string, Promise<ScanResult>>();
  private readonly failures = new Map<string, { message: string; until: number }>();

  constructor(private readonly options: ScanServiceOptions) {
    this.pool = new WorkerPool(options.workers, options.queueSize);
  }

  /**
   * What the gate can say about a subject's scan now: a cached result, a failure, or a scan
   * running (started here if needed; `done` settles when it ends).
   */
  async evidence(repository: string, subject: string, images: string[]): Promise<{ scan: ScanEvidence; done?: Promise<unknown> }> {
    let dbVersion: string;
    try {
      dbVersion = this.options.scanner.dbVersion();
    } catch (err) {
      return { scan: { state: 'error', message: (err as Error).message } };
    }
    const cached = await this.cached(subject, dbVersion);
    if (cached) return { scan: { state: 'done', result: cached } };
    const failure = this.failures.get(subject);
    if (failure && failure.until > Date.now()) return { scan: { state: 'error', message: failure.message } };
    const running = this.inflight.get(subject) ?? this.start(repository, subject, images, dbVersion);
    return { scan: { state: 'running' }, done: running.catch(() => undefined) };
  }

  /** Scans again regardless of the cache (rescans); stores and returns the result. */
  async rescan(repository: string, subject: string, images: string[]): Promise<ScanResult> {
    const dbVersion = this.options.scanner.dbVersion();
    return this.inflight.get(subject) ?? this.start(repository, subject, images, dbVersion);
  }

  /** Forgets a remembered failure (an administrator asked for a re-evaluation). */
  forget(subject: string): void {
    this.failures.delete(subject);
  }

  async cached(subject: string, dbVersion: string): Promise<ScanResult | null> {
    const rows = await this.options.db.query<{ result: ScanResult }>(
      'SELECT result FROM scan_results WHERE subject_digest = $1 AND db_version = $2',
      [subject, dbVersion],
    );
    return rows[0]?.result ?? null;
  }

  /** The newest stored result for a subject under any database version. */
  async latest(subject: string): Promise<ScanResult | null> {
    const rows = await this.options.db.query<{ result: ScanResult }>(
      'SELECT result FROM scan_results WHERE subject_digest = $1 ORDER BY created_at DESC LIMIT 1',
      [subject],
    );
    return rows[0]?.result ?? null;
  }

  private start(repository: string, subject: string, images: string[], dbVersion: string): Promise<ScanResult> {
    const run = this.pool
      .run((worker) => this.scanImages(repository, images, worker))
      .then(async (findings) => {
        const result: ScanResult = {
          digests: images,
          dbVersion,
          scanner: this.options.scanner.name,
          scannedAt: new Date().toISOString(),
          findings,
          summary: summarize(findings),
        };
        await this.options.db.query(
          `INSERT INTO scan_results (subject_digest, db_version, scanner, result) VALUES ($1, $2, $3, $4)
           ON CONFLICT (subject_digest, db_version) DO UPDATE SET result = EXCLUDED.result, created_at = now()`,
          [subject, dbVersion, result.scanner, jsonParam(result)],
        );
        this.failures.delete(subject);
        return result;
      })
      .catch((err: unknown) => {
        const message = err instanceof ScanError ? err.message : `scan failed: ${(err as Error).message}`;
        this.failures.set(subject, { message, until: Date.now() + (this.options.errorTtlMs ?? 600_000) });
        this.options.logger.warn({ repository, subject, err: message }, 'vulnerability scan failed');
        throw new ScanError(message);
      })
      .finally(() => this.inflight.delete(subject));
    this.inflight.set(subject, run);
    return run;
  }

  /** Each image manifest in its own layout (an index's children one by one); findings merged. */
  private async scanImages(repository: string, images: string[], worker: number): Promise<Finding[]> {
    const cacheDir = this.options.scanner.workerCacheDir(this.options.workDir, worker);
    const merged = new Map<string, Finding>();
    for (const image of images) {
      const layout = await writeImageLayout(this.options.registry, repository, image, this.options.workDir);
      try {
        for (const f of await this.options.scanner.scan(layout, cacheDir)) {
          const key = `${f.id}\u0000${f.pkgName}\u0000${f.installedVersion}`;
          if (!merged.has(key)) merged.set(key, f);
        }
      } finally {
        await rm(layout, { recursive: true, force: true });
      }
    }
    return [...merged.values()];
  }
}
