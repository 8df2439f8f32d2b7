/**
 * Starting and stopping the two registries under test, each on a free loopback port with a
 * temporary data directory that is deleted when it stops:
 *  - the gateway (`node dist/src/gateway.cjs serve`, embedded PGlite, authentication off);
 *  - the reference registry, `docker-registry` (CNCF distribution 2.8.2, Debian package).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export type TargetKind = 'reference' | 'gateway';

export interface Target {
  readonly kind: TargetKind;
  readonly baseUrl: string;
  readonly pid: number;
  readonly dataDir: string;
  alive(): boolean;
  /** Stops the process where it is (SIGSTOP) while the other target takes its turn: no timer or thread of it runs. */
  pause(): void;
  /** Lets a paused process go on (SIGCONT); harmless when it runs. */
  resume(): void;
  /** The last few KiB the process wrote to stdout/stderr. */
  logTail(): string;
  stop(): Promise<void>;
}

export class SetupError extends Error {
  override name = 'SetupError';
}

const LOG_TAIL_BYTES = 16 * 1024;

/** Finds `docker-registry` on PATH (or BENCH_REFERENCE_BIN), or says how to install it. */
export function findReferenceBinary(): { bin: string; version: string } {
  const candidates = process.env.BENCH_REFERENCE_BIN
    ? [process.env.BENCH_REFERENCE_BIN]
    : [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'docker-registry')), '/usr/bin/docker-registry'];
  for (const bin of candidates) {
    try {
      accessSync(bin, constants.X_OK);
    } catch {
      continue;
    }
    const out = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    return { bin, version: `${out.stdout ?? ''}${out.stderr ?? ''}`.trim() || 'unknown version' };
  }
  throw new SetupError(
    'the reference registry `docker-registry` was not found on PATH.\n' +
      'Install it (Debian/Ubuntu package, CNCF distribution 2.8.2) with:\n\n    sudo apt-get install docker-registry\n\n' +
      '(or point BENCH_REFERENCE_BIN at a distribution `registry` binary).',
  );
}

/** `npm run build` in the repository root; the output is shown only if it fails. */
export function buildGateway(repoRoot: string): void {
  const res = spawnSync('npm', ['run', 'build'], { cwd: repoRoot, encoding: 'utf8', env: process.env });
  if (res.status !== 0) {
    throw new SetupError(
      `\`npm run build\` failed (exit ${res.status ?? res.signal}):\n${res.stdout ?? ''}${res.stderr ?? ''}\n` +
        '(set BENCH_SKIP_BUILD=1 to benchmark the existing dist/ instead)',
    );
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

class ProcessTarget implements Target {
  private tail = '';
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitPromise: Promise<void>;

  constructor(
    readonly kind: TargetKind,
    readonly baseUrl: string,
    readonly dataDir: string,
    private readonly child: ChildProcess,
  ) {
    const collect = (chunk: Buffer) => {
      this.tail = (this.tail + chunk.toString('utf8')).slice(-LOG_TAIL_BYTES);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    this.exitPromise = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  alive(): boolean {
    return this.exited === undefined;
  }

  pause(): void {
    if (this.alive()) this.child.kill('SIGSTOP');
  }

  resume(): void {
    if (this.alive()) this.child.kill('SIGCONT');
  }

  exitDescription(): string {
    if (!this.exited) return 'running';
    return this.exited.signal ? `killed by ${this.exited.signal}` : `exited with code ${this.exited.code}`;
  }

  logTail(): string {
    return this.tail;
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.alive()) {
        throw new SetupError(`${this.kind} ${this.exitDescription()} before it was ready; its output:\n${this.tail}`);
      }
      try {
        const status = await getStatus(`${this.baseUrl}/v2/`);
        if (status === 200) return;
        last = `GET /v2/ -> ${status}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await this.stop();
    throw new SetupError(`${this.kind} not ready after ${timeoutMs} ms (last: ${last}); its output:\n${this.tail}`);
  }

  async stop(): Promise<void> {
    if (this.alive()) {
      this.resume();
      this.child.kill('SIGTERM');
      const killed = await Promise.race([this.exitPromise.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
      if (!killed) {
        this.child.kill('SIGKILL');
        await this.exitPromise;
      }
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

function getStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function startScriptWords(repoRoot: string): string[] {
  const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts?: { start?: string } };
  return (pkg.scripts?.start ?? '').split(/\s+/);
}

/** The node options `npm start` gives the gateway (its V8 heap settings), so the bench runs it as users do. */
export function gatewayNodeFlags(repoRoot: string): string[] {
  const words = startScriptWords(repoRoot);
  return words.slice(words.indexOf('node') + 1).filter((w) => w.startsWith('--'));
}

/** The environment `npm start` sets for the gateway (its malloc tunables), as NAME=value pairs before `node`. */
export function gatewayEnvironment(repoRoot: string): Record<string, string> {
  const words = startScriptWords(repoRoot);
  const assignments = words.slice(0, Math.max(0, words.indexOf('node'))).filter((w) => /^[A-Z_][A-Z0-9_]*=/.test(w));
  return Object.fromEntries(assignments.map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
}

/** Starts the built gateway (`dist/src/gateway.cjs`) from `repoRoot`, with the node options and environment of `npm start`. */
export async function startGateway(repoRoot: string, extraEnv: Record<string, string> = {}): Promise<Target> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'bench-gateway-'));
  const args = [...gatewayNodeFlags(repoRoot), path.join(repoRoot, 'dist', 'src', 'gateway.cjs'), 'serve'];
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: {
      ...process.env,
      ...gatewayEnvironment(repoRoot),
      GATEWAY_HTTP_ADDR: `127.0.0.1:${port}`,
      GATEWAY_STORAGE_ROOT: dataDir,
      GATEWAY_LOG_LEVEL: 'warn',
      // The bench speaks plain anonymous HTTP to both registries, as to the reference.
      GATEWAY_AUTH_ENABLED: 'false',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const target = new ProcessTarget('gateway', `http://127.0.0.1:${port}`, dataDir, child);
  await target.waitReady(60_000);
  return target;
}

/** Starts `docker-registry serve <config>` with filesystem storage under a temp dir. */
export async function startReference(bin: string): Promise<Target> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'bench-reference-'));
  const configFile = path.join(dataDir, 'config.yml');
  const storage = path.join(dataDir, 'storage');
  writeFileSync(
    configFile,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      // Like the gateway at level warn, no per-request access log.
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${JSON.stringify(storage)}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child = spawn(bin, ['serve', configFile], { cwd: dataDir, stdio: ['ignore', 'pipe', 'pipe'] });
  const target = new ProcessTarget('reference', `http://127.0.0.1:${port}`, dataDir, child);
  await target.waitReady(30_000);
  return target;
}
