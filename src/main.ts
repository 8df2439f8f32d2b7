/** CLI (commander): `gateway serve` and the admin commands. Started through gateway.cts. */
import { Command } from 'commander';
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
  if (err instanceof StartupError) {
    // An error code (EACCES, EADDRINUSE, ECONNREFUSED, PostgreSQL's 28P01) says the message is the whole story.
    const cause = err.cause as { code?: unknown; stack?: string } | undefined;
    process.stderr.write(`gateway: ${err.message}\n${typeof cause?.code === 'string' || !cause?.stack ? '' : `${cause.stack}\n`}`);
    process.exit(1);
  }
  process.stderr.write(`gateway: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
