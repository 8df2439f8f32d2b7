/** `gateway policy lint|test`: check policy files with every problem's JSON pointer; evaluate offline. */
import { readFileSync, statSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { DENY, readPolicyDir, readPolicyFile, type FileProblem } from '../policy/loader.js';
import { evaluate } from '../policy/evaluate.js';
import type { Decision, Evidence } from '../policy/types.js';
import { EXIT, formatTable } from './admit.js';

export interface CommandResult {
  exitCode: number;
  output: string;
}

/**
 * Every problem in the given policy files and directories (`file: /pointer: message`), exit 0
 * when there is none and 2 otherwise. With `defaultPolicy` (the configured one), a directory
 * must also define it, as the gateway requires at start.
 */
export function lintPolicies(paths: string[], options: { defaultPolicy?: string } = {}): CommandResult {
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
      const wanted = options.defaultPolicy;
      if (wanted && wanted !== DENY && read.problems.length === 0 && !read.policies.some((p) => p.policy.name === wanted)) {
        problems.push({ file: target, pointer: '/', message: `policy.defaultPolicy names ${JSON.stringify(wanted)}, which no file here defines (use "deny" or add it)` });
      }
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
const item = {
  type: 'object',
  required: ['kind', 'digest', 'mediaType'],
  properties: {
    kind: { enum: ['referrer', 'cosign-signature', 'cosign-attestation', 'cosign-sbom', 'fallback-index'] },
    digest: { type: 'string', pattern: '^sha(256|512):[a-f0-9]+$' },
    mediaType: { type: 'string' },
    artifactType: { type: ['string', 'null'], default: null },
    annotations: { type: 'object', additionalProperties: { type: 'string' }, default: {} },
  },
};
/** The `Evidence` shape of src/policy/types.ts; facts an evidence file leaves out are empty. */
export const EVIDENCE_SCHEMA = {
  definitions: { facts },
  type: 'object',
  required: ['repository', 'subject'],
  properties: {
    repository: { type: 'string', minLength: 1 },
    subject: { $ref: '#/definitions/facts' },
    items: { type: 'array', items: item, default: [] },
    extra: { type: 'object', default: {} },
  },
};
const validateEvidence = new Ajv({ allErrors: true, useDefaults: true }).compile<Evidence>(EVIDENCE_SCHEMA);

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

/** `gateway policy test` from its options as typed: checks `--output` and `--now`, then tests. */
export function runPolicyTest(opts: { policy: string; evidence: string; output?: string; now?: string }): CommandResult {
  const output = opts.output ?? 'table';
  if (output !== 'table' && output !== 'json') return { exitCode: EXIT.error, output: `--output must be table or json, not ${JSON.stringify(output)}\n` };
  const now = opts.now === undefined ? undefined : new Date(opts.now);
  if (now && Number.isNaN(now.getTime())) return { exitCode: EXIT.error, output: `--now must be an ISO 8601 time, like 2026-01-31T12:00:00Z, not ${JSON.stringify(opts.now)}\n` };
  return testPolicy(opts.policy, opts.evidence, { output, now });
}

/** Evaluates one policy file against one evidence file: exit 0 admitted, 2 denied, 3 pending, 1 unreadable input. */
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

/** Lints the configured policy directory as the gateway would load it, default policy included. */
export function lintConfigured(configFile?: string): CommandResult {
  const { policy } = loadConfig({ file: configFile });
  return lintPolicies([policy.dir], { defaultPolicy: policy.defaultPolicy });
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('check and try admission policies');
  policy
    .command('lint')
    .description('validate policy files (default: the configured policy directory); exit 0 valid, 2 problems')
    .argument('[paths...]', 'policy files or directories')
    .option('-c, --config <file>', 'configuration file (also GATEWAY_CONFIG)')
    .action((paths: string[], opts: { config?: string }) => {
      const result = paths.length > 0 ? lintPolicies(paths) : lintConfigured(opts.config);
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
      const result = runPolicyTest(opts);
      (result.exitCode === EXIT.error ? process.stderr : process.stdout).write(result.output);
      process.exitCode = result.exitCode;
    });
}
