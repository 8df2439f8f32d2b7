/** CLI commands that manage identities and certificates: users, robots, certs. */
import { userInfo } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { loadConfig, type Action } from '../config/config.js';
import { openDatabase } from '../db/database.js';
import { assertValidUsername, upsertHtpasswdUser } from '../auth/htpasswd.js';
import { actions, days } from './args.js';
import { RobotError, RobotStore, type RobotActor } from '../auth/robots.js';
import { configuredAuditLog } from '../server.js';
import { makeCertificates, writeCertificates } from '../auth/certs.js';
import { expiryFromDays, robotJson } from '../http/admin.js';

/** A password or secret from stdin (first line), or from an echo-free prompt on a terminal. */
export async function readSecret(prompt: string): Promise<string> {
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0];
  }
  // Interactive: read without echo.
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
  const output = rl as unknown as { _writeToOutput: (s: string) => void };
  process.stdout.write(prompt);
  output._writeToOutput = () => undefined;
  const answer = await new Promise<string>((resolve) => rl.question('', resolve));
  rl.close();
  process.stdout.write('\n');
  return answer;
}

/** Changes made with this command are recorded as the local account's: `cli:<user>` (no registry user has a colon). */
const CLI_ACTOR = (): RobotActor => ({ principal: `cli:${userInfo().username}` });

async function withRobots<T>(configFile: string | undefined, fn: (robots: RobotStore) => Promise<T>): Promise<T | undefined> {
  const config = loadConfig({ file: configFile });
  const db = await openDatabase({
    url: config.database.url || undefined,
    pgliteDir: path.join(config.storage.root, 'pglite'),
  });
  try {
    return await fn(new RobotStore(db, configuredAuditLog(config, db)));
  } catch (err) {
    if (err instanceof RobotError) {
      process.stderr.write(`gateway: ${err.message}\n`);
      process.exitCode = 2;
      return undefined;
    }
    throw err;
  } finally {
    await db.close();
  }
}

export function registerAdminCommands(program: Command): void {
  const users = program.command('users').description('htpasswd users (bcrypt)');
  users
    .command('add <name>')
    .description('create or update a user; the password is read from stdin or a prompt, never from arguments')
    .option('-c, --config <file>', 'configuration file')
    .action(async (name: string, opts: { config?: string }) => {
      assertValidUsername(name); // before asking for a password
      const config = loadConfig({ file: opts.config });
      const password = await readSecret(`password for ${name}: `);
      const result = await upsertHtpasswdUser(config.auth.htpasswd, name, password);
      process.stdout.write(`${result} user ${name} in ${config.auth.htpasswd}\n`);
    });

  const robots = program.command('robots').description('robot accounts for CI (log in as robot$NAME)');
  robots
    .command('add <name>')
    .description('create a robot; its secret is printed once')
    .requiredOption('-r, --repository <glob...>', 'repository globs it may use (team/* one level, team/** any depth)')
    .option('-a, --actions <list>', 'comma-separated actions: pull,push,delete', actions, actions('pull,push'))
    .option('--expires-in-days <n>', 'expire after this many days (1-3650)', days)
    .option('--description <text>', 'what it is for', '')
    .option('-c, --config <file>', 'configuration file')
    .action(async (name: string, opts: { repository: string[]; actions: Action[]; expiresInDays?: number; description: string; config?: string }) => {
      await withRobots(opts.config, async (store) => {
        const { robot, secret } = await store.create({
          name,
          repositories: opts.repository,
          actions: opts.actions,
          description: opts.description,
          expiresAt: expiryFromDays(opts.expiresInDays),
        }, CLI_ACTOR());
        process.stdout.write(`${JSON.stringify({ ...robotJson(robot), secret }, null, 2)}\n`);
        process.stderr.write('The secret is shown only this once.\n');
      });
    });
  robots
    .command('list')
    .option('-c, --config <file>', 'configuration file')
    .action(async (opts: { config?: string }) => {
      await withRobots(opts.config, async (store) => {
        process.stdout.write(`${JSON.stringify((await store.list()).map(robotJson), null, 2)}\n`);
      });
    });
  robots
    .command('rotate <name>')
    .description('replace the secret (the old one stops working at once)')
    .option('--expires-in-days <n>', 'new expiry (1-3650 days)', days)
    .option('-c, --config <file>', 'configuration file')
    .action(async (name: string, opts: { expiresInDays?: number; config?: string }) => {
      await withRobots(opts.config, async (store) => {
        const { robot, secret } = await store.rotate(name, CLI_ACTOR(), opts.expiresInDays ? expiryFromDays(opts.expiresInDays) : undefined);
        process.stdout.write(`${JSON.stringify({ ...robotJson(robot), secret }, null, 2)}\n`);
      });
    });
  robots
    .command('remove <name>')
    .option('-c, --config <file>', 'configuration file')
    .action(async (name: string, opts: { config?: string }) => {
      await withRobots(opts.config, async (store) => {
        await store.remove(name, CLI_ACTOR());
        process.stdout.write(`removed robot ${name}\n`);
      });
    });

  program
    .command('certs')
    .description('make a local CA and a server certificate (development, Kubernetes webhook)')
    .requiredOption('-n, --names <list>', 'comma-separated DNS names and IP addresses for the server certificate')
    .option('-o, --out <dir>', 'output directory', './certs')
    .option('--days <n>', 'validity in days', '365')
    .action((opts: { names: string; out: string; days: string }) => {
      const names = opts.names.split(',').map((n) => n.trim()).filter((n) => n.length > 0);
      const files = writeCertificates(opts.out, makeCertificates(names, Number(opts.days)));
      process.stdout.write(`${files.join('\n')}\nServe with GATEWAY_HTTP_TLS_CERT=${files[2]} GATEWAY_HTTP_TLS_KEY=${files[3]}\n`);
    });
}
