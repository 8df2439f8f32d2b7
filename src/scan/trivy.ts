/**
 * The Trivy CLI as a subprocess, offline: `trivy image --input <OCI layout> --format json
 * --scanners vuln` with the flags that keep it from touching the network, a cache directory
 * per worker (Trivy's scan cache is a locked bbolt file), its own `--timeout` and the
 * gateway's SIGKILL when it overruns. Exit status 0 with a SchemaVersion 2 report is a
 * result; anything else is an error that says why (fail closed).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { parseTrivyReport, type Finding } from './report.js';

export interface TrivyOptions {
  /** The trivy executable (a name on PATH or a path). */
  path: string;
  /** Where the seeded vulnerability database lives (`<cacheDir>/db/trivy.db` + `metadata.json`). */
  cacheDir: string;
  timeoutSeconds: number;
  /** Client mode: `http(s)://host:4954` of a `trivy server`; empty = scan locally. */
  server: string;
  token: string;
}

export class ScanError extends Error {}

/** Largest report accepted on stdout. */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;

export class TrivyScanner {
  readonly name = 'trivy';
  constructor(readonly options: TrivyOptions) {}

  /** The database version findings come from: part of the scan cache key. */
  dbVersion(now = new Date()): string {
    if (this.options.server) return `server ${this.options.server} ${now.toISOString().slice(0, 10)}`;
    const file = path.join(this.options.cacheDir, 'db', 'metadata.json');
    let meta: { Version?: number; UpdatedAt?: string };
    try {
      meta = JSON.parse(readFileSync(file, 'utf8')) as typeof meta;
    } catch {
      throw new ScanError(`Trivy has no vulnerability database in ${path.dirname(file)} (seed it with "trivy image --download-db-only --cache-dir ${this.options.cacheDir}")`);
    }
    return `v${meta.Version ?? '?'} ${meta.UpdatedAt ?? 'unknown'}`;
  }

  /** A cache directory for one worker that shares the seeded database. */
  workerCacheDir(workDir: string, worker: number): string {
    const dir = path.join(workDir, `trivy-cache-${worker}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const shared of ['db', 'java-db']) {
      const link = path.join(dir, shared);
      const target = path.join(this.options.cacheDir, shared);
      if (existsSync(target) && !existsSync(link)) symlinkSync(target, link);
    }
    return dir;
  }

  args(layoutDir: string, cacheDir: string): string[] {
    const args = [
      'image',
      '--input', layoutDir,
      '--format', 'json',
      '--scanners', 'vuln',
      '--quiet',
      '--skip-db-update',
      '--skip-java-db-update',
      '--offline-scan',
      '--skip-version-check',
      '--disable-telemetry',
      '--list-all-pkgs=false',
      '--exit-code', '0',
      '--cache-dir', cacheDir,
      '--timeout', `${this.options.timeoutSeconds}s`,
    ];
    if (this.options.server) args.push('--server', this.options.server, ...(this.options.token ? ['--token', this.options.token] : []));
    return args;
  }

  /** Scans one image layout; resolves with its findings or rejects with a ScanError. */
  scan(layoutDir: string, cacheDir: string): Promise<Finding[]> {
    const args = this.args(layoutDir, cacheDir);
    return new Promise((resolve, reject) => {
      const child = spawn(this.options.path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TRIVY_NO_PROGRESS: 'true' } });
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      let killed = false;
      // Trivy's own --timeout first; the gateway's kill a little later, for a Trivy that hangs anyway.
      const grace = Math.min(10_000, Math.max(500, this.options.timeoutSeconds * 500));
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, this.options.timeoutSeconds * 1000 + grace);
      child.stdout.on('data', (chunk: Buffer) => {
        outBytes += chunk.length;
        if (outBytes > MAX_REPORT_BYTES) {
          killed = true;
          child.kill('SIGKILL');
          return;
        }
        out.push(chunk);
      });
      child.stderr.on('data', (chunk: Buffer) => (err = (err + chunk.toString('utf8')).slice(-4000)));
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new ScanError(e.code === 'ENOENT' ? `Trivy is not installed (no executable "${this.options.path}")` : `cannot run Trivy: ${e.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (killed) {
          const why = outBytes > MAX_REPORT_BYTES ? `its report exceeded ${MAX_REPORT_BYTES} bytes` : `it ran longer than ${this.options.timeoutSeconds}s`;
          reject(new ScanError(`Trivy was stopped: ${why}`));
          return;
        }
        if (code !== 0) {
          const last = err.trim().split('\n').filter(Boolean).pop() ?? '';
          reject(new ScanError(`Trivy failed (${signal ? `signal ${signal}` : `exit status ${code}`})${last ? `: ${last.slice(0, 500)}` : ''}`));
          return;
        }
        try {
          resolve(parseTrivyReport(Buffer.concat(out).toString('utf8')));
        } catch (e) {
          reject(new ScanError((e as Error).message));
        }
      });
    });
  }
}
