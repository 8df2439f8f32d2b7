/**
 * A throwaway PostgreSQL cluster: initdb into a temp dir (as the `postgres` user when we are
 * root, since initdb refuses root), start on a free loopback port, and remove it all at the
 * end. For tests, one cluster without fsync, started lazily and shared by every suite; each
 * suite gets its own database. The bench starts its own with the server's defaults.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';

export interface Cluster {
  port: number;
  dir: string;
  process: ChildProcess;
}

let cluster: Promise<Cluster> | null = null;
let databaseCounter = 0;

function binDir(): string {
  const fromEnv = process.env.PG_BINDIR;
  if (fromEnv) return fromEnv;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(path.join(base, v, 'bin', 'initdb'))) return path.join(base, v, 'bin');
  }
  return path.dirname(execFileSync('which', ['initdb']).toString().trim());
}

function asPostgresUser(command: string, args: string[]): [string, string[]] {
  if (process.getuid?.() === 0) return ['runuser', ['-u', 'postgres', '--', command, ...args]];
  return [command, args];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Starts a cluster; `durable: false` turns fsync off (tests), otherwise the server's defaults apply. */
export async function startCluster(options: { durable: boolean }): Promise<Cluster> {
  const bin = binDir();
  const dir = mkdtempSync(path.join(tmpdir(), 'gateway-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
  }
  const data = path.join(dir, 'data');
  const [initCmd, initArgs] = asPostgresUser(path.join(bin, 'initdb'), [
    '-D', data, '--auth=trust', '--username=postgres', '--encoding=UTF8', '--no-sync',
  ]);
  try {
    execFileSync(initCmd, initArgs, { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const port = await freePort();
  const [cmd, args] = asPostgresUser(path.join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
    '-c', 'max_connections=200', ...(options.durable ? [] : ['-c', 'fsync=off']),
  ]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    try {
      await client.connect();
      await client.end();
      break;
    } catch {
      await client.end().catch(() => undefined);
      if (child.exitCode !== null || Date.now() > deadline) {
        const exit = child.exitCode;
        await removeCluster({ port, dir, process: child });
        throw new Error(`PostgreSQL did not start (exit ${exit}): ${stderr.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { port, dir, process: child };
}

/** A fresh, empty database on the shared throwaway cluster; returns its URL. */
export async function createTestDatabase(): Promise<string> {
  cluster ??= startCluster({ durable: false });
  return createDatabase(await cluster, `gw_test_${process.pid}_${++databaseCounter}`);
}

/** Creates database `name` on a cluster; returns its URL. */
export async function createDatabase(c: Cluster, name: string): Promise<string> {
  const admin = new pg.Client({ host: '127.0.0.1', port: c.port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return `postgres://postgres@127.0.0.1:${c.port}/${name}`;
}

export async function stopCluster(): Promise<void> {
  if (!cluster) return;
  const c = await cluster.catch(() => null);
  cluster = null;
  if (c) await removeCluster(c);
}

/** Stops a cluster and removes its directory. */
export async function removeCluster(c: Cluster): Promise<void> {
  // Signal the postmaster itself (runuser need not forward signals): SIGINT = fast shutdown.
  const pidFile = path.join(c.dir, 'data', 'postmaster.pid');
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : NaN;
  const exited = new Promise((r) => (c.process.exitCode !== null ? r(undefined) : c.process.once('exit', r)));
  if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGINT');
  else c.process.kill('SIGINT');
  await exited;
  rmSync(c.dir, { recursive: true, force: true });
}
