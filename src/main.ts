/** CLI (commander): `gateway serve` and the admin commands. Started through gateway.cts. */
import { Command } from 'commander';
import type { Logger } from 'pino';
import { ConfigError, environmentKeys, loadConfig } from './config/config.js';
import { startGateway, StartupError } from './server.js';
import { registerAdminCommands } from './cli/admin.js';
import { registerAdmitCommand, registerRescanCommand } from './cli/admit.js';
import { registerAuditCommands } from './cli/audit.js';
import { registerPolicyCommands } from './cli/policy.js';
import { PolicyLoadError } from './policy/loader.js';

const program = new Command();
program.name('gateway').description('Supply-chain security gateway for container images (OCI registry front door)');

program
  .command('serve')
  .description('serve the registry and gateway API')
  .option('-c, --config <file>', 'YAML or JSON configuration file (also GATEWAY_CONFIG)')
  .addHelpText('after', () => `\nEnvironment variables:\n${environmentKeys().map((k) => `  ${k.env.padEnd(40)} ${k.key}`).join('\n')}\n`)
  .action(async (opts: { config?: string }) => {
    const config = loadConfig({ file: opts.config });
    const gateway = await startGateway(config);
    const stop = async (signal: string) => {
      // A second signal ends the process at once (the handlers are registered once).
      gateway.logger.info({ signal, graceSeconds: config.http.shutdownGraceSeconds }, 'shutting down: refusing new connections, letting requests in progress finish');
      await gateway.close();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.on('uncaughtException', (err, origin) => exitOnBug(gateway.logger, err, origin));
  });

registerAdminCommands(program);
registerAdmitCommand(program);
registerRescanCommand(program);
registerPolicyCommands(program);
registerAuditCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof PolicyLoadError) {
    process.stderr.write(`gateway: ${err.message}\n`);
    process.exit(78);
  }
  process.stderr.write(`gateway: ${explain(err)}\n`);
  process.exit(1);
});

/**
 * A bug reached the top of the stack (an exception no code caught, or a promise rejected
 * with no handler): its state is unknown, so the process ends, as Node's default would, but
 * the error goes to the structured log first, where operators look. The embedded
 * database recovers at the next start as after any crash.
 */
function exitOnBug(logger: Logger, err: unknown, origin: string): void {
  logger.fatal({ err, origin }, 'uncaught error: the gateway stops');
  const exit = () => process.exit(1);
  setTimeout(exit, 2000);
  logger.flush(exit);
}

/**
 * The message alone when an error code says it all (EACCES, ECONNREFUSED, PostgreSQL's
 * 28P01, ELOCKED for a database directory in use), for the error or the cause of a failed
 * start; else the message with the stack, which a bug needs.
 */
function explain(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err instanceof StartupError ? err.cause : err;
  if (typeof (cause as { code?: unknown } | undefined)?.code === 'string') return err.message;
  const stack = cause instanceof Error ? cause.stack : undefined;
  return err instanceof StartupError ? `${err.message}${stack ? `\n${stack}` : ''}` : (err.stack ?? err.message);
}
