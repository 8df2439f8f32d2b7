/**
 * Runs the real OCI clients installed on this machine (skopeo, umoci, oras, cosign) against
 * a test gateway. A missing client fails the test with a message saying how to install it;
 * nothing is skipped silently. Every client runs with an offline environment: proxies point
 * at a dead local port (loopback excepted), and its configuration, credentials and caches
 * live in a throwaway folder, so nothing leaves the machine and nothing on it is changed.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export type ClientName = 'skopeo' | 'umoci' | 'oras' | 'cosign';

/** Where install-clients.sh unpacks cosign and oras (its CLIENTS_DIR). */
export const CLIENTS_DIR = process.env.CLIENTS_DIR ?? '/opt/oci-clients';
const INSTALL_HINT = 'run /work/shared/tools/install-clients.sh (Debian packages skopeo, umoci; cosign, oras unpacked under /opt/oci-clients)';

const DEFAULT_TIMEOUT_MS = 60_000;
/** Enough for a verbose failure; outputs of the tests' commands are far smaller. */
const MAX_BUFFER = 64 * 1024 * 1024;

export class ClientError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the client after this long (default 60 s) and fail with what it printed. */
  timeoutMs?: number;
  cwd?: string;
  /** Added on top of the offline environment. */
  env?: NodeJS.ProcessEnv;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function searchPath(): string[] {
  return (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
}

const located = new Map<ClientName, string>();

/** Absolute path of a client binary; throws (failing the test) with an install hint when absent. */
export function locateClient(name: ClientName): string {
  const known = located.get(name);
  if (known) return known;
  const envOverride = process.env[`${name.toUpperCase()}_BIN`];
  const candidates = [
    ...(envOverride ? [envOverride] : []),
    // The unpacked trixie clients first: a newer cosign/oras than the system might carry.
    path.join(CLIENTS_DIR, 'usr', 'bin', name),
    ...searchPath().map((dir) => path.join(dir, name)),
    path.join('/usr/bin', name),
    path.join('/usr/local/bin', name),
  ];
  const found = candidates.find(isExecutable);
  if (!found) {
    throw new Error(`OCI client "${name}" is not installed (looked in ${candidates.join(', ')}); ${INSTALL_HINT}`);
  }
  located.set(name, found);
  return found;
}

/** Locates every client a suite needs, failing with one message listing all that are missing. */
export function requireClients(...names: ClientName[]): void {
  const missing: string[] = [];
  for (const name of names) {
    try {
      locateClient(name);
    } catch {
      missing.push(name);
    }
  }
  if (missing.length > 0) throw new Error(`missing OCI client(s): ${missing.join(', ')}; ${INSTALL_HINT}`);
}

let offlineDir: string | null = null;

/** The throwaway home of every client's configuration and caches for this test process. */
export function clientStateDir(): string {
  if (offlineDir) return offlineDir;
  const dir = mkdtempSync(path.join(tmpdir(), 'oci-clients-'));
  for (const sub of ['docker', 'tuf', 'home', 'xdg-config', 'xdg-cache', 'xdg-runtime', 'containers']) {
    mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
  }
  writeFileSync(path.join(dir, 'docker', 'config.json'), '{"auths":{}}\n');
  writeFileSync(path.join(dir, 'containers', 'auth.json'), '{"auths":{}}\n');
  writeFileSync(path.join(dir, 'containers', 'policy.json'), `${JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] })}\n`);
  // No search registries, no mirrors: image references in tests are always fully qualified.
  writeFileSync(path.join(dir, 'containers', 'registries.conf'), 'unqualified-search-registries = []\n');
  mkdirSync(path.join(dir, 'containers', 'registries.d'), { recursive: true });
  offlineDir = dir;
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The environment of /work/shared/tools/offline-env.sh: a stray request for the public
 * Sigstore TUF repository (or anything else off the machine) fails at once on a dead
 * local port, while loopback (the gateway) is reached directly.
 */
export function offlineEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const dir = clientStateDir();
  const deadProxy = 'http://127.0.0.1:9';
  const noProxy = '127.0.0.1,localhost,::1';
  return {
    PATH: [path.join(CLIENTS_DIR, 'usr', 'bin'), ...searchPath()].join(path.delimiter),
    LANG: 'C.UTF-8',
    HOME: path.join(dir, 'home'),
    TMPDIR: process.env.TMPDIR ?? tmpdir(),
    XDG_CONFIG_HOME: path.join(dir, 'xdg-config'),
    XDG_CACHE_HOME: path.join(dir, 'xdg-cache'),
    XDG_RUNTIME_DIR: path.join(dir, 'xdg-runtime'),
    HTTPS_PROXY: deadProxy,
    HTTP_PROXY: deadProxy,
    https_proxy: deadProxy,
    http_proxy: deadProxy,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
    DOCKER_CONFIG: path.join(dir, 'docker'),
    REGISTRY_AUTH_FILE: path.join(dir, 'containers', 'auth.json'),
    // skopeo 1.9 has no --registries-conf flag; containers/image reads this variable instead.
    CONTAINERS_REGISTRIES_CONF: path.join(dir, 'containers', 'registries.conf'),
    TUF_ROOT: path.join(dir, 'tuf'),
    SIGSTORE_NO_CACHE: '1',
    COSIGN_PASSWORD: process.env.COSIGN_PASSWORD ?? '',
    ...extra,
  };
}

/** Runs a client; resolves with its output, rejects with a ClientError carrying stderr on failure. */
export function runClient(name: ClientName, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const binary = locateClient(name);
  const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const shown = `${name} ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile(
      binary,
      args,
      { cwd: options.cwd, env: offlineEnv(options.env), timeout, killSignal: 'SIGKILL', maxBuffer: MAX_BUFFER, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (!error) {
          resolve({ stdout, stderr });
          return;
        }
        const err = error as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string | null };
        const exitCode = typeof err.code === 'number' ? err.code : null;
        const timedOut = err.killed === true && err.signal === 'SIGKILL';
        const why = timedOut
          ? `timed out after ${timeout} ms`
          : exitCode !== null
            ? `exited with status ${exitCode}`
            : err.signal
              ? `was killed by ${err.signal}`
              : `could not run: ${err.message}`;
        const output = [stderr.trim() && `stderr:\n${tail(stderr)}`, stdout.trim() && `stdout:\n${tail(stdout)}`]
          .filter(Boolean)
          .join('\n');
        reject(new ClientError(`${shown} ${why}${output ? `\n${output}` : ''}`, shown, exitCode, err.signal ?? null, stdout, stderr));
      },
    );
  });
}

/** Runs a client that must fail; resolves with its ClientError, rejects if it succeeded. */
export async function runClientExpectingFailure(name: ClientName, args: string[], options: RunOptions = {}): Promise<ClientError> {
  let result: RunResult;
  try {
    result = await runClient(name, args, options);
  } catch (err) {
    if (err instanceof ClientError && err.exitCode !== null) return err;
    throw err;
  }
  throw new Error(`${name} ${args.join(' ')} was expected to fail but succeeded:\n${tail(result.stdout)}\n${tail(result.stderr)}`);
}

function tail(text: string, max = 4000): string {
  const trimmed = text.trim();
  return trimmed.length > max ? `…${trimmed.slice(-max)}` : trimmed;
}

// ---- per-client conveniences -------------------------------------------------------------

/** skopeo with the throwaway signature policy and registries configuration. */
export function skopeo(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runClient('skopeo', [...skopeoGlobalArgs(), ...args], options);
}

export function skopeoExpectingFailure(args: string[], options: RunOptions = {}): Promise<ClientError> {
  return runClientExpectingFailure('skopeo', [...skopeoGlobalArgs(), ...args], options);
}

function skopeoGlobalArgs(): string[] {
  const dir = path.join(clientStateDir(), 'containers');
  return [
    '--policy', path.join(dir, 'policy.json'),
    '--registries.d', path.join(dir, 'registries.d'),
  ];
}

export function umoci(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runClient('umoci', args, options);
}

export function oras(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runClient('oras', args, options);
}

export function orasExpectingFailure(args: string[], options: RunOptions = {}): Promise<ClientError> {
  return runClientExpectingFailure('oras', args, options);
}

export function cosign(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runClient('cosign', args, options);
}

/** Parses a client's JSON output, failing with the output itself when it is not JSON. */
export function parseJsonOutput<T = unknown>(result: RunResult, what: string): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch (err) {
    throw new Error(`${what} did not print JSON (${(err as Error).message}):\n${tail(result.stdout)}\n${tail(result.stderr)}`);
  }
}
