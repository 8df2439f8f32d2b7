/** `gateway audit verify|export`: check the chain and its signed checkpoints; write JSON Lines. */
import { createWriteStream, readFileSync } from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { openDatabase, type Database } from '../db/database.js';
import { AuditLog, type VerifyReport } from './../audit/log.js';
import { isoTime, wholeNumber } from './args.js';

async function withAudit<T>(configFile: string | undefined, fn: (audit: AuditLog) => Promise<T>): Promise<T> {
  const config = loadConfig({ file: configFile });
  const db: Database = await openDatabase({ url: config.database.url || undefined, pgliteDir: path.join(config.storage.root, 'pglite') });
  try {
    return await fn(new AuditLog(db));
  } finally {
    await db.close();
  }
}

export function formatReport(report: VerifyReport): string {
  const lines = report.problems.map((p) => `record ${p.seq}: ${p.kind}: ${p.message}`);
  const summary = report.ok
    ? `audit trail intact: ${report.checked} records, ${report.checkpoints} signed checkpoints verified`
    : `audit trail BROKEN: ${report.problems.length} problem(s) in ${report.checked} records`;
  return [...lines, summary].join('\n') + '\n';
}

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('verify and export the tamper-evident audit trail');
  audit
    .command('verify')
    .description('check every record against the hash chain and the signed checkpoints (exit 0 intact, 2 broken)')
    .option('-c, --config <file>', 'configuration file (also GATEWAY_CONFIG)')
    .option('--from <seq>', 'first record to check', wholeNumber)
    .option('--to <seq>', 'last record to check', wholeNumber)
    .option('--key <file>', 'PEM public key the checkpoints must be signed with (default: the key stored with each)')
    .action(async (opts: { config?: string; from?: number; to?: number; key?: string }) => {
      const key: KeyObject | undefined = opts.key ? createPublicKey(readFileSync(opts.key, 'utf8')) : undefined;
      const report = await withAudit(opts.config, (log) =>
        log.verify({ from: opts.from, to: opts.to }, key),
      );
      process.stdout.write(formatReport(report));
      process.exitCode = report.ok ? 0 : 2;
    });
  audit
    .command('export')
    .description('write the audit trail as JSON Lines, oldest first')
    .option('-c, --config <file>', 'configuration file (also GATEWAY_CONFIG)')
    .option('-o, --output <file>', 'write here instead of stdout')
    .option('--since <time>', 'only records at or after this ISO 8601 time', isoTime)
    .option('--repository <name>', 'only records about this repository')
    .action(async (opts: { config?: string; output?: string; since?: Date; repository?: string }) => {
      const since = opts.since;
      const out = opts.output ? createWriteStream(opts.output) : process.stdout;
      const count = await withAudit(opts.config, (log) => log.export(out, { since, repository: opts.repository }));
      if (opts.output) await new Promise<void>((resolve, reject) => (out as ReturnType<typeof createWriteStream>).end((err?: Error | null) => (err ? reject(err) : resolve())));
      process.stderr.write(`exported ${count} records\n`);
    });
}
