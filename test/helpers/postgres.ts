/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir (as the `postgres` user
 * when we are root, since initdb refuses root), start on a free loopback port, and remove
 * it all when the test run ends. Started once, lazily, and shared by every suite; each
 * suite gets its own database.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';

interface Cluster {
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

async function startCluster(): Promise<Cluster> {
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
  execFileSync(initCmd, initArgs, { stdio: 'pipe' });
  const port = await freePort();
  const [cmd, args] = asPostgresUser(path.join(bin, 'postgres'), [
    '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
    '-c', 'fsync=off', '-c', 'max_connections=200',
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
        throw new Error(`PostgreSQL did not start (exit ${child.exitCode}): ${stderr.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { port, dir, process: child };
}

/** A fresh, empty database on the shared throwaway cluster; returns its URL. */
export async function createTestDatabase(): Promise<string> {
  cluster ??= startCluster();
  const { port } = await cluster;
  const name = `gw_test_${process.pid}_${++databaseCounter}`;
  const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return `postgres://postgres@127.0.0.1:${port}/${name}`;
}

export async function stopCluster(): Promise<void> {
  if (!cluster) return;
  const c = await cluster.catch(() => null);
  cluster = null;
  if (!c) return;
  // Signal the postmaster itself (runuser need not forward signals): SIGINT = fast shutdown.
  const pidFile = path.join(c.dir, 'data', 'postmaster.pid');
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : NaN;
  const exited = new Promise((r) => (c.process.exitCode !== null ? r(undefined) : c.process.once('exit', r)));
  if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGINT');
  else c.process.kill('SIGINT');
  await exited;
  rmSync(c.dir, { recursive: true, force: true });
}
