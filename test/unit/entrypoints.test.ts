/**
 * The gateway's node options (its V8 heap settings, see README "Performance") are given in
 * three places: `npm start`, the `gateway` bin's shebang and the Dockerfile's ENTRYPOINT.
 * They must not drift apart, or one way of starting it runs slower than the others. All of
 * them, and the bench, run the CommonJS launcher, which sizes libuv's thread pool before the
 * ES module loader creates it.
 */
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { gatewayEnvironment, gatewayNodeFlags } from '../../bench/lib/servers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('entry points', () => {
  it('start the gateway with the same node options: npm start, the bin, the container and the bench', () => {
    const fromStart = gatewayNodeFlags(ROOT);
    expect(fromStart).to.include('--initial-old-space-size=128');
    const shebang = readFileSync(path.join(ROOT, 'src', 'gateway.cts'), 'utf8').split('\n')[0] as string;
    expect(shebang.startsWith('#!/usr/bin/env -S ')).to.equal(true);
    expect(shebang.split(/\s+/).filter((w) => w.startsWith('--'))).to.deep.equal(fromStart);
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
    const words = JSON.parse(entrypoint ?? '[]') as string[];
    expect(words.filter((w) => w.startsWith('--'))).to.deep.equal(fromStart);

    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
    const launcher = 'dist/src/gateway.cjs';
    expect(pkg.bin.gateway).to.equal(launcher);
    expect(pkg.scripts.start).to.match(new RegExp(`^([A-Z_]+=\\S+ )*node( --\\S+)* ${launcher} serve$`));
    expect(words.at(-1)).to.equal(launcher);
  });

  it('start the gateway with the same malloc tunables: npm start, the bin, the container and the bench', () => {
    const fromStart = gatewayEnvironment(ROOT);
    expect(fromStart).to.deep.equal({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
    const shebang = readFileSync(path.join(ROOT, 'src', 'gateway.cts'), 'utf8').split('\n')[0] as string;
    expect(shebang).to.match(/^#!\/usr\/bin\/env -S GLIBC_TUNABLES=glibc\.malloc\.hugetlb=1 node /);
    // The shebang's assignment reaches the process (env -S takes NAME=value before the command).
    const dir = mkdtempSync(path.join(tmpdir(), 'shebang-'));
    try {
      const script = path.join(dir, 'probe.cjs');
      writeFileSync(script, `${shebang}\nprocess.stdout.write(String(process.env.GLIBC_TUNABLES));\n`, { mode: 0o755 });
      const { GLIBC_TUNABLES: _, ...inherited } = process.env;
      expect(execFileSync(script, { env: inherited, encoding: 'utf8' })).to.equal('glibc.malloc.hugetlb=1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const runtimeStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(runtimeStage).to.match(/^ENV [^\n]*(\\\n[^\n]*)*\bGLIBC_TUNABLES=glibc\.malloc\.hugetlb=1\b/m);
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    // The bench's client runs with them too, and its registries inherit them.
    expect(pkg.scripts.bench).to.match(/^GLIBC_TUNABLES=glibc\.malloc\.hugetlb=1 tsx /);
    expect(readFileSync(path.join(ROOT, 'bench', 'lib', 'servers.ts'), 'utf8')).to.include('...gatewayEnvironment(repoRoot),');
    expect(readFileSync(path.join(ROOT, 'bench', 'lib', 'servers.ts'), 'utf8')).to.include("path.join(repoRoot, 'dist', 'src', 'gateway.cjs'), 'serve'");
  });

  it('sizes the thread pool, unless the operator did, before anything creates it', function () {
    this.timeout(20_000);
    // The launcher as tsc emits it, beside a stand-in main.js that reports the pool it got.
    const dir = mkdtempSync(path.join(tmpdir(), 'launcher-'));
    try {
      const source = readFileSync(path.join(ROOT, 'src', 'gateway.cts'), 'utf8');
      const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.NodeNext, target: ts.ScriptTarget.ES2022 }, fileName: 'gateway.cts' });
      writeFileSync(path.join(dir, 'gateway.cjs'), outputText);
      writeFileSync(
        path.join(dir, 'main.js'),
        `require('fs').stat('/', () => console.log(JSON.stringify({ size: process.env.UV_THREADPOOL_SIZE, threads: require('fs').readdirSync('/proc/self/task').length })));`,
      );
      const run = (env: Record<string, string>) => {
        const { UV_THREADPOOL_SIZE: _, ...inherited } = process.env;
        const out = execFileSync(process.execPath, [path.join(dir, 'gateway.cjs')], { env: { ...inherited, ...env }, encoding: 'utf8' });
        return JSON.parse(out) as { size: string; threads: number };
      };
      const sized = run({});
      const operator = run({ UV_THREADPOOL_SIZE: '4' });
      expect(sized.size).to.equal('8');
      expect(operator.size).to.equal('4');
      // Four more threads: the pool was created at the launcher's size, not libuv's default.
      expect(sized.threads - operator.threads).to.equal(4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gateway serve, when start-up cannot use what a setting names', () => {
  const serve = (env: Record<string, string>) => {
    try {
      execFileSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'main.ts'), 'serve'], {
        env: { ...process.env, GATEWAY_POLICY_DIR: path.join(ROOT, 'policies'), GATEWAY_LOG_LEVEL: 'error', ...env },
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (err) {
      const { status, stderr } = err as { status: number; stderr: string };
      return { status, stderr };
    }
    throw new Error('gateway serve started');
  };

  it('names the setting and the system error in one line, without a stack', function () {
    this.timeout(60_000);
    const dir = mkdtempSync(path.join(tmpdir(), 'startup-'));
    try {
      writeFileSync(path.join(dir, 'a-file'), '');
      const storage = serve({ GATEWAY_STORAGE_ROOT: path.join(dir, 'a-file', 'data') });
      expect(storage.status).to.equal(1);
      expect(storage.stderr).to.match(/^gateway: cannot use the storage root .*a-file\/data \(storage\.root, GATEWAY_STORAGE_ROOT\): ENOTDIR/);
      expect(storage.stderr.trim().split('\n')).to.have.length(1);

      const database = serve({ GATEWAY_STORAGE_ROOT: path.join(dir, 'data'), GATEWAY_DATABASE_URL: 'postgres://u:hunter2@127.0.0.1:1/db' });
      expect(database.status).to.equal(1);
      expect(database.stderr).to.match(/^gateway: cannot open the database at postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db \(database\.url, GATEWAY_DATABASE_URL\): .*ECONNREFUSED/);
      expect(database.stderr).not.to.contain('hunter2');
      expect(database.stderr.trim().split('\n')).to.have.length(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops with exit code 78 at an unknown setting variable', function () {
    this.timeout(30_000);
    const typo = serve({ GATEWAY_AUTH_ENABLE: 'false' });
    expect(typo.status).to.equal(78);
    expect(typo.stderr).to.contain('did you mean GATEWAY_AUTH_ENABLED?');
  });
});

describe('gateway serve, when a bug throws', () => {
  /**
   * Serves on a free port with a preloaded module that, on SIGUSR2, throws or rejects from a
   * fresh stack (as a bug in a callback would); resolves with the exit code and the fatal log line.
   */
  const crash = async (bug: string) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bug-'));
    try {
      const preload = path.join(dir, 'bug.mjs');
      writeFileSync(preload, `process.on('SIGUSR2', () => setImmediate(() => { ${bug} }));\n`);
      const child = spawn(process.execPath, ['--import', 'tsx', '--import', preload, path.join(ROOT, 'src', 'main.ts'), 'serve'], {
        env: { ...process.env, GATEWAY_POLICY_DIR: path.join(ROOT, 'policies'), GATEWAY_STORAGE_ROOT: path.join(dir, 'data'), GATEWAY_HTTP_ADDR: '127.0.0.1:0', GATEWAY_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes('"gateway listening"')) child.kill('SIGUSR2');
      });
      const code = await new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
      const lines = stdout.trim().split('\n').map((line) => JSON.parse(line) as { level: number; msg: string; origin?: string; err?: { message: string; stack: string } });
      return { code, fatal: lines.find((line) => line.level === 60) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('logs an uncaught exception through the structured log, with its stack, and exits 1', async function () {
    this.timeout(60_000);
    const { code, fatal } = await crash("throw new Error('a bug in a callback')");
    expect(code).to.equal(1);
    expect(fatal?.msg).to.equal('uncaught error: the gateway stops');
    expect(fatal?.origin).to.equal('uncaughtException');
    expect(fatal?.err?.message).to.equal('a bug in a callback');
    expect(fatal?.err?.stack).to.contain('bug.mjs');
  });

  it('does the same for a promise rejected with no handler', async function () {
    this.timeout(60_000);
    const { code, fatal } = await crash("Promise.reject(new Error('nobody awaited this'))");
    expect(code).to.equal(1);
    expect(fatal?.origin).to.equal('unhandledRejection');
    expect(fatal?.err?.message).to.equal('nobody awaited this');
  });
});
