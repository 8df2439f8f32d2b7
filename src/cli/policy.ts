/** `gateway policy lint|test`: check policy files with every problem's JSON pointer; evaluate offline. */
import { readFileSync, statSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { readPolicyDir, readPolicyFile, type FileProblem } from '../policy/loader.js';
import { evaluate } from '../policy/evaluate.js';
import type { Decision, Evidence } from '../policy/types.js';
import { EXIT, formatTable } from './admit.js';

export interface CommandResult {
  exitCode: number;
  output: string;
}

export function lintPolicies(paths: string[]): CommandResult {
  const problems: FileProblem[] = [];
  let files = 0;
  for (const target of paths) {
    let isDir = false;
    try {
      isDir = statSync(target).isDirectory();
    } catch (err) {
      problems.push({ file: target, pointer: '/', message: (err as Error).message });
      continue;
    }
    if (isDir) {
      const read = readPolicyDir(target);
      files += read.policies.length;
      problems.push(...read.problems);
    } else {
      files++;
      problems.push(...readPolicyFile(target).problems);
    }
  }
  if (problems.length === 0) return { exitCode: 0, output: `${files} policy file(s) valid\n` };
  return { exitCode: 2, output: problems.map((p) => `${p.file}: ${p.pointer}: ${p.message}`).join('\n') + '\n' };
}

const platform = {
  type: 'object',
  required: ['os', 'architecture'],
  properties: { os: { type: 'string' }, architecture: { type: 'string' }, variant: { type: 'string' } },
};
const facts: Record<string, unknown> = {
  type: 'object',
  required: ['digest', 'mediaType'],
  properties: {
    digest: { type: 'string', pattern: '^sha(256|512):[a-f0-9]+$' },
    mediaType: { type: 'string' },
    artifactType: { type: ['string', 'null'] },
    totalSize: { type: 'integer', minimum: 0 },
    annotations: { type: 'object', additionalProperties: { type: 'string' } },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    platforms: { type: 'array', items: platform },
    children: { type: 'array', items: { $ref: '#/definitions/facts' } },
  },
};
const validateEvidence = new Ajv({ allErrors: true, useDefaults: true }).compile<Evidence>({
  definitions: { facts },
  type: 'object',
  required: ['repository', 'subject'],
  properties: {
    repository: { type: 'string', minLength: 1 },
    subject: { $ref: '#/definitions/facts' },
    items: { type: 'array', default: [] },
    extra: { type: 'object', default: {} },
  },
});

/** Fills what an evidence file may leave out, so that rule types see the full shape. */
function completeFacts(f: Partial<Evidence['subject']> & { digest: string; mediaType: string }): Evidence['subject'] {
  return {
    digest: f.digest,
    mediaType: f.mediaType,
    artifactType: f.artifactType ?? null,
    totalSize: f.totalSize ?? 0,
    annotations: f.annotations ?? {},
    labels: f.labels ?? {},
    platforms: f.platforms ?? [],
    children: (f.children ?? []).map(completeFacts),
  };
}

export function testPolicy(policyFile: string, evidenceFile: string, options: { output: 'table' | 'json'; now?: Date }): CommandResult {
  const read = readPolicyFile(policyFile);
  if (!read.loaded) return { exitCode: EXIT.error, output: read.problems.map((p) => `${p.file}: ${p.pointer}: ${p.message}`).join('\n') + '\n' };
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(evidenceFile, 'utf8'));
  } catch (err) {
    return { exitCode: EXIT.error, output: `${evidenceFile}: cannot read as JSON: ${(err as Error).message}\n` };
  }
  if (!validateEvidence(doc)) {
    const problems = (validateEvidence.errors ?? []).map((e) => `${evidenceFile}: ${e.instancePath || '/'}: ${e.message ?? 'is invalid'}`);
    return { exitCode: EXIT.error, output: problems.join('\n') + '\n' };
  }
  const evidence: Evidence = { ...doc, subject: completeFacts(doc.subject), items: doc.items ?? [], extra: doc.extra ?? {} };
  const decision = evaluate(read.loaded, evidence, options.now ?? new Date());
  const output = options.output === 'json' ? JSON.stringify(decision, null, 2) + '\n' : formatTable(viewOf(evidence, decision));
  return { exitCode: decision.outcome === 'admitted' ? EXIT.admitted : decision.outcome === 'denied' ? EXIT.denied : EXIT.pending, output };
}

function viewOf(evidence: Evidence, decision: Decision) {
  return {
    repository: evidence.repository,
    digest: evidence.subject.digest,
    state: decision.outcome,
    tags: [],
    policy: decision.policy,
    results: decision.results,
    reasons: decision.reasons,
    waitingFor: decision.waitingFor,
    warnings: decision.warnings,
  };
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('check and try admission policies');
  policy
    .command('lint')
    .description('validate policy files (default: the configured policy directory); exit 0 valid, 2 problems')
    .argument('[paths...]', 'policy files or directories')
    .option('-c, --config <file>', 'configuration file (also GATEWAY_CONFIG)')
    .action((paths: string[], opts: { config?: string }) => {
      const targets = paths.length > 0 ? paths : [loadConfig({ file: opts.config }).policy.dir];
      const result = lintPolicies(targets);
      (result.exitCode === 0 ? process.stdout : process.stderr).write(result.output);
      process.exitCode = result.exitCode;
    });
  policy
    .command('test')
    .description('evaluate a policy against an evidence file offline (exit 0 admitted, 2 denied, 3 pending, 1 error)')
    .requiredOption('--policy <file>', 'policy file')
    .requiredOption('--evidence <file>', 'evidence JSON (repository, subject facts, items)')
    .option('-o, --output <format>', 'table or json', 'table')
    .option('--now <time>', 'evaluate as of this ISO 8601 time')
    .action((opts: { policy: string; evidence: string; output: string; now?: string }) => {
      const now = opts.now ? new Date(opts.now) : undefined;
      if (now && Number.isNaN(now.getTime())) throw new Error('--now must be an ISO 8601 time');
      const result = testPolicy(opts.policy, opts.evidence, { output: opts.output === 'json' ? 'json' : 'table', now });
      process.stdout.write(result.output);
      process.exitCode = result.exitCode;
    });
}
