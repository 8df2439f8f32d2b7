/**
 * The policy directory: every top-level `*.json` except the schema is a policy. Loaded at
 * start (any problem stops start-up), and again on change or SIGHUP, all or nothing: a
 * directory with a bad file keeps the previous set and reports every problem.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { compileGlobs } from '../auth/access.js';
import { policyProblems, type Problem } from './schema.js';
import { loadTrustedKey, loadTrustedRoot, type TrustedKey } from '../verify/keys.js';
import type { TrustedRoot } from '@sigstore/protobuf-specs';
import type { LoadedPolicy, Policy, RuleType } from './types.js';
import { registerRuleType, ruleType } from './registry.js';

export const SCHEMA_FILE = 'policy.schema.json';
export const DENY = 'deny';
/** Editors write a file in several steps; one reload after they settle. */
const WATCH_DEBOUNCE_MS = 200;

export interface FileProblem extends Problem {
  file: string;
}

export class PolicyLoadError extends Error {
  constructor(readonly problems: FileProblem[]) {
    super(`invalid policies:\n${problems.map((p) => `  ${p.file}: ${p.pointer}: ${p.message}`).join('\n')}`);
    this.name = 'PolicyLoadError';
  }
}

export function contentHash(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Reads and validates one policy file. */
export function readPolicyFile(file: string): { loaded?: LoadedPolicy; problems: FileProblem[] } {
  let bytes: Buffer;
  let doc: unknown;
  try {
    bytes = readFileSync(file);
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return { problems: [{ file, pointer: '/', message: `cannot read as JSON: ${(err as Error).message}` }] };
  }
  const problems = policyProblems(doc).map((p) => ({ file, ...p }));
  if (problems.length > 0) return { problems };
  const policy = doc as Policy;
  const { keys, problems: keyProblems } = policyKeys(policy, path.dirname(file));
  const { roots, problems: rootProblems } = policyRoots(policy, path.dirname(file));
  const references = ruleReferenceProblems(policy);
  const all = [...keyProblems, ...rootProblems, ...references];
  if (all.length > 0) return { problems: all.map((p) => ({ file, ...p })) };
  return { loaded: { policy, hash: contentHash(bytes), file, keys, trustedRoots: roots }, problems: [] };
}

/** Reads every trusted root the rules name (`keyless.trustedRoot`). */
function policyRoots(policy: Policy, dir: string): { roots: Array<{ ref: string; root: TrustedRoot }>; problems: Problem[] } {
  const roots = new Map<string, TrustedRoot>();
  const problems: Problem[] = [];
  policy.rules.forEach((rule, i) => {
    const ref = (rule.keyless as { trustedRoot?: unknown } | undefined)?.trustedRoot;
    if (typeof ref !== 'string' || roots.has(ref)) return;
    try {
      roots.set(ref, loadTrustedRoot(dir, ref));
    } catch (err) {
      problems.push({ pointer: `/rules/${i}/keyless/trustedRoot`, message: (err as Error).message });
    }
  });
  return { roots: [...roots].map(([ref, root]) => ({ ref, root })), problems };
}

/** Reads every key the rules name, relative to the policy's directory. */
function policyKeys(policy: Policy, dir: string): { keys: TrustedKey[]; problems: Problem[] } {
  const keys = new Map<string, TrustedKey>();
  const problems: Problem[] = [];
  policy.rules.forEach((rule, i) => {
    if (!Array.isArray(rule.keys)) return;
    (rule.keys as string[]).forEach((ref, j) => {
      if (keys.has(ref)) return;
      try {
        keys.set(ref, loadTrustedKey(dir, ref));
      } catch (err) {
        problems.push({ pointer: `/rules/${i}/keys/${j}`, message: (err as Error).message });
      }
    });
  });
  return { keys: [...keys.values()], problems };
}

/** `signedBy` must name a signature rule of the same policy. */
function ruleReferenceProblems(policy: Policy): Problem[] {
  const problems: Problem[] = [];
  policy.rules.forEach((rule, i) => {
    if (typeof rule.signedBy !== 'string') return;
    if (!policy.rules.some((r) => r.id === rule.signedBy && r.type === 'signature')) {
      problems.push({ pointer: `/rules/${i}/signedBy`, message: `names ${JSON.stringify(rule.signedBy)}, which is not a signature rule of this policy` });
    }
  });
  return problems;
}

/** Top-level `*.json`, not the schema, not hidden (editor lock files such as `.#prod.json`). */
function isPolicyFileName(name: string): boolean {
  return name.endsWith('.json') && name !== SCHEMA_FILE && !name.startsWith('.');
}

/**
 * Symbolic links are followed: a Kubernetes ConfigMap mounts each file as a link into its
 * `..data` directory. A dangling link is kept, so that reading it reports the problem.
 */
function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** Every policy in a directory, or every problem found there. */
export function readPolicyDir(dir: string): { policies: LoadedPolicy[]; problems: FileProblem[] } {
  let names: string[];
  try {
    names = readdirSync(dir, { withFileTypes: true })
      .filter((e) => isPolicyFileName(e.name) && (e.isFile() || (e.isSymbolicLink() && !isDirectory(path.join(dir, e.name)))))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    return { policies: [], problems: [{ file: dir, pointer: '/', message: `cannot read the policy directory: ${(err as Error).message}` }] };
  }
  const policies: LoadedPolicy[] = [];
  const problems: FileProblem[] = [];
  const byName = new Map<string, string>();
  for (const name of names) {
    const file = path.join(dir, name);
    const read = readPolicyFile(file);
    problems.push(...read.problems);
    if (!read.loaded) continue;
    const other = byName.get(read.loaded.policy.name);
    if (other) {
      problems.push({ file, pointer: '/name', message: `policy name ${JSON.stringify(read.loaded.policy.name)} is also used by ${other}` });
      continue;
    }
    byName.set(read.loaded.policy.name, file);
    policies.push(read.loaded);
  }
  return { policies, problems };
}

/** The built-in rule behind `policy.defaultPolicy: deny`; not usable in policy files. */
const denyRule: RuleType = {
  type: 'builtin-deny',
  schema: { not: {} },
  evaluate: (_rule, evidence) => ({
    status: 'failed',
    message: `no policy applies to repository ${evidence.repository} and the default is deny`,
  }),
};

export function denyPolicy(): LoadedPolicy {
  if (!ruleType(denyRule.type)) registerRuleType(denyRule as RuleType<never>);
  const policy: Policy = { name: DENY, repositories: ['**'], mode: 'enforce', rules: [{ id: 'no-policy', type: denyRule.type }] };
  return { policy, hash: contentHash(JSON.stringify(policy)) };
}

interface Compiled {
  loaded: LoadedPolicy;
  matches: (repository: string) => boolean;
}

export class PolicySet {
  private compiled: Compiled[] = [];
  private watcher: FSWatcher | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dir: string,
    readonly defaultPolicy: string,
    private readonly logger?: Logger,
    /** Called after every successful load (start-up included), e.g. to audit it. */
    private readonly onLoad?: (policies: LoadedPolicy[]) => Promise<void> | void,
  ) {}

  /**
   * Loads the directory; throws PolicyLoadError listing every problem and keeps the previous
   * set. The new set takes effect only once `onLoad` (the audit record) has succeeded.
   * Loads run one at a time, so a slow one never replaces a newer set.
   */
  load(): Promise<LoadedPolicy[]> {
    const run = this.queue.then(() => this.loadNow());
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async loadNow(): Promise<LoadedPolicy[]> {
    const { policies, problems } = readPolicyDir(this.dir);
    if (this.defaultPolicy !== DENY && problems.length === 0 && !policies.some((p) => p.policy.name === this.defaultPolicy)) {
      problems.push({ file: this.dir, pointer: '/', message: `policy.defaultPolicy names ${JSON.stringify(this.defaultPolicy)}, which no file here defines (use "deny" or add it)` });
    }
    if (problems.length > 0) throw new PolicyLoadError(problems);
    const compiled = policies
      .map((loaded) => ({ loaded, matches: compileGlobs(loaded.policy.repositories) }))
      .sort((a, b) => (b.loaded.policy.priority ?? 0) - (a.loaded.policy.priority ?? 0) || (a.loaded.policy.name < b.loaded.policy.name ? -1 : 1));
    await this.onLoad?.(policies);
    this.compiled = compiled;
    this.logger?.info({ dir: this.dir, policies: policies.map((p) => ({ name: p.policy.name, file: p.file, hash: p.hash })) }, 'policies loaded');
    return policies;
  }

  /** Reloads; on failure logs every problem and keeps serving the previous set. */
  async reload(): Promise<boolean> {
    try {
      await this.load();
      return true;
    } catch (err) {
      this.logger?.error({ err: err instanceof PolicyLoadError ? undefined : err, problems: (err as PolicyLoadError).problems }, 'policy reload failed; the previous policies stay in force');
      return false;
    }
  }

  policies(): LoadedPolicy[] {
    return this.compiled.map((c) => c.loaded);
  }

  /** The highest-priority policy naming the repository (ties: name order), if any. */
  select(repository: string): LoadedPolicy | null {
    return this.compiled.find((c) => c.matches(repository))?.loaded ?? null;
  }

  /**
   * The policy that applies, falling back to the default (`deny`, or a loaded policy's name;
   * the configured one unless another is given). A default that names no loaded policy denies.
   */
  resolve(repository: string, defaultPolicy: string = this.defaultPolicy): LoadedPolicy {
    const selected = this.select(repository);
    if (selected) return selected;
    if (defaultPolicy === DENY) return denyPolicy();
    const named = this.compiled.find((c) => c.loaded.policy.name === defaultPolicy);
    return named ? named.loaded : denyPolicy();
  }

  /** Reloads when files in the directory change (debounced). */
  watch(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(this.dir, () => {
        if (this.debounce) clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.reload(), WATCH_DEBOUNCE_MS);
        this.debounce.unref();
      });
      // An unhandled 'error' (the directory removed, too many watches) would end the process.
      this.watcher.on('error', (err) => {
        this.logger?.warn({ err, dir: this.dir }, 'stopped watching the policy directory; reload with SIGHUP');
        this.close();
      });
      this.watcher.unref();
    } catch (err) {
      this.logger?.warn({ err, dir: this.dir }, 'cannot watch the policy directory; reload with SIGHUP');
    }
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.debounce) clearTimeout(this.debounce);
  }
}
