/**
 * `gateway admit <image> --wait 60s`: the CI client. Resolves the image to a digest on the
 * gateway, waits for its admission and prints the verdict per rule. Exit codes: 0 admitted,
 * 2 denied, 3 still pending (or expired), 1 error.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { isValidDigest, isValidName, isValidTag } from '../registry/names.js';
import { MAX_WAIT_SECONDS, parseWait } from '../http/admissions.js';
import { readSecret } from './admin.js';

export interface ImageRef {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface AdmitOptions {
  wait: string;
  output: 'table' | 'json';
  username?: string;
  password?: string;
  plainHttp?: boolean;
  caFile?: string;
}

export interface AdmitResult {
  exitCode: number;
  output: string;
}

interface RuleResultView {
  id: string;
  type: string;
  mode: string;
  status: string;
  message: string;
}

interface AdmissionView {
  repository: string;
  digest: string;
  state: string;
  tags: string[];
  policy: { name: string; hash: string; mode: string } | null;
  results: RuleResultView[];
  reasons: string[];
  waitingFor: string[];
  warnings: string[];
}

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export const EXIT = { admitted: 0, error: 1, denied: 2, pending: 3 } as const;

/** `host[:port]/repo/path[:tag][@digest]`; the first segment is the registry. */
export function parseImage(image: string): ImageRef {
  const slash = image.indexOf('/');
  if (slash <= 0) throw new Error(`image ${JSON.stringify(image)} must name the gateway, like gateway.example.com/team/app:1.0`);
  const registry = image.slice(0, slash);
  let rest = image.slice(slash + 1);
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isValidDigest(digest)) throw new Error(`${JSON.stringify(digest)} is not a valid digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw new Error(`${JSON.stringify(tag)} is not a valid tag`);
  }
  if (!isValidName(rest)) throw new Error(`${JSON.stringify(rest)} is not a valid repository name`);
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: rest, tag, digest };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(url: URL, method: string, headers: Record<string, string>, ca?: Buffer, timeoutMs = (MAX_WAIT_SECONDS + 30) * 1000): Promise<Reply> {
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method, headers, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${url.host}`)));
    req.end();
  });
}

function errorMessage(reply: Reply): string {
  try {
    const body = JSON.parse(reply.body) as { errors?: Array<{ message?: string }> };
    if (body.errors?.[0]?.message) return body.errors[0].message;
  } catch {
    // not JSON
  }
  return `HTTP ${reply.status}`;
}

export class GatewayClient {
  private readonly base: string;
  private readonly headers: Record<string, string> = {};
  private readonly ca?: Buffer;

  constructor(registry: string, options: Pick<AdmitOptions, 'username' | 'password' | 'plainHttp' | 'caFile'>) {
    this.base = `${options.plainHttp ? 'http' : 'https'}://${registry}`;
    if (options.username) {
      this.headers.Authorization = `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}`;
    }
    if (options.caFile) this.ca = readFileSync(options.caFile);
  }

  async resolve(ref: ImageRef): Promise<string> {
    if (ref.digest) return ref.digest;
    const reply = await request(new URL(`${this.base}/v2/${ref.repository}/manifests/${ref.tag}`), 'HEAD', { ...this.headers, Accept: MANIFEST_ACCEPT }, this.ca);
    if (reply.status !== 200) {
      const why = reply.status === 401 ? 'authentication required (give --username and --password-stdin)' : reply.status === 404 ? 'not found' : `HTTP ${reply.status}`;
      throw new Error(`cannot resolve ${ref.repository}:${ref.tag}: ${why}`);
    }
    const digest = reply.headers['docker-content-digest'];
    if (typeof digest !== 'string' || !isValidDigest(digest)) throw new Error(`the gateway sent no valid Docker-Content-Digest for ${ref.repository}:${ref.tag}`);
    return digest;
  }

  async rescan(filter: { repository?: string; digest?: string }): Promise<RescanView[]> {
    const url = new URL(`${this.base}/gateway/v1/rescans`);
    if (filter.repository) url.searchParams.set('repository', filter.repository);
    if (filter.digest) url.searchParams.set('digest', filter.digest);
    const reply = await request(url, 'POST', { ...this.headers, Accept: 'application/json' }, this.ca, 3600_000);
    if (reply.status !== 200) throw new Error(`rescan: ${errorMessage(reply)}`);
    return (JSON.parse(reply.body) as { rescanned: RescanView[] }).rescanned;
  }

  async admission(repository: string, digest: string, waitSeconds: number): Promise<AdmissionView> {
    const url = new URL(`${this.base}/gateway/v1/admissions/${digest}`);
    url.searchParams.set('repository', repository);
    if (waitSeconds > 0) url.searchParams.set('wait', `${waitSeconds}s`);
    const reply = await request(url, 'GET', { ...this.headers, Accept: 'application/json' }, this.ca);
    if (reply.status !== 200) throw new Error(`admission of ${repository}@${digest}: ${errorMessage(reply)}`);
    return JSON.parse(reply.body) as AdmissionView;
  }
}

export interface RescanView {
  repository: string;
  digest: string;
  wouldBe: string;
  reasons: string[];
  newFindings: string[];
  error: string | null;
}

/** Asks the gateway to rescan admitted images (administrators); exit 0 all still pass, 2 some would not, 1 error. */
export async function runRescan(registry: string, filter: { repository?: string; digest?: string }, options: Omit<AdmitOptions, 'wait'>): Promise<AdmitResult> {
  try {
    const client = new GatewayClient(registry, options);
    const reports = await client.rescan(filter);
    if (options.output === 'json') return { exitCode: reports.some((r) => r.wouldBe !== 'admitted') ? EXIT.denied : 0, output: JSON.stringify(reports, null, 2) + '\n' };
    const lines = reports.map((r) => {
      const head = `${r.repository}@${r.digest}: ${r.error ? `scan failed: ${r.error}` : `would be ${r.wouldBe}`}`;
      const details = [...r.reasons.map((x) => `  ${x}`), ...r.newFindings.map((f) => `  new: ${f}`)];
      return [head, ...details].join('\n');
    });
    lines.push(`${reports.length} admitted image(s) rescanned; ${reports.filter((r) => r.wouldBe !== 'admitted').length} would not be admitted today (they stay pullable)`);
    return { exitCode: reports.some((r) => r.wouldBe !== 'admitted') ? EXIT.denied : 0, output: lines.join('\n') + '\n' };
  } catch (err) {
    return { exitCode: EXIT.error, output: `gateway rescan: ${(err as Error).message}\n` };
  }
}

/** Waits for a verdict until `waitSeconds` have passed, one long-poll at a time. */
export async function waitForVerdict(client: GatewayClient, repository: string, digest: string, waitSeconds: number): Promise<AdmissionView> {
  const deadline = Date.now() + waitSeconds * 1000;
  for (;;) {
    const remaining = Math.ceil((deadline - Date.now()) / 1000);
    const view = await client.admission(repository, digest, Math.max(0, Math.min(remaining, MAX_WAIT_SECONDS)));
    if (view.state !== 'pending' || Date.now() >= deadline) return view;
  }
}

export function formatTable(view: AdmissionView): string {
  const rows = [['RULE', 'TYPE', 'MODE', 'STATUS', 'MESSAGE'], ...view.results.map((r) => [r.id, r.type, r.mode, r.status, r.message])];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((cell, i) => (i < 4 ? cell.padEnd(widths[i]) : cell)).join('  ').trimEnd());
  const policy = view.policy ? `${view.policy.name} (${view.policy.mode}, ${view.policy.hash.slice(0, 19)}…)` : 'none';
  const head = [`image:   ${view.repository}@${view.digest}`, `policy:  ${policy}`, ''];
  const tail = ['', `verdict: ${view.state.toUpperCase()}`];
  for (const reason of view.reasons) tail.push(`  denied: ${reason}`);
  if (view.state === 'pending') for (const waiting of view.waitingFor) tail.push(`  waiting for: ${waiting}`);
  for (const warning of view.warnings) tail.push(`  warning: ${warning}`);
  return [...head, ...lines, ...tail].join('\n') + '\n';
}

export function exitCodeFor(state: string): number {
  if (state === 'admitted') return EXIT.admitted;
  if (state === 'denied') return EXIT.denied;
  return EXIT.pending;
}

export async function runAdmit(image: string, options: AdmitOptions): Promise<AdmitResult> {
  try {
    const ref = parseImage(image);
    const waitSeconds = options.wait === '' ? 0 : parseWaitUnbounded(options.wait);
    const client = new GatewayClient(ref.registry, options);
    const digest = await client.resolve(ref);
    const view = await waitForVerdict(client, ref.repository, digest, waitSeconds);
    const output = options.output === 'json' ? JSON.stringify(view, null, 2) + '\n' : formatTable(view);
    return { exitCode: exitCodeFor(view.state), output };
  } catch (err) {
    return { exitCode: EXIT.error, output: `gateway admit: ${(err as Error).message}\n` };
  }
}

/** Like the API's wait parameter, without its per-request cap (the CLI polls repeatedly). */
function parseWaitUnbounded(value: string): number {
  const match = /^(\d{1,6})(s|m)?$/.exec(value.trim());
  if (!match) {
    parseWait(value); // throws the API's message
    return 0;
  }
  return Number(match[1]) * (match[2] === 'm' ? 60 : 1);
}

interface ConnectionFlags {
  username?: string;
  passwordStdin?: boolean;
  plainHttp?: boolean;
  caFile?: string;
}

/** The flags every command that talks to a gateway takes. */
function withConnectionFlags(command: Command, who: string): Command {
  return command
    .option('-u, --username <name>', `${who} (also GATEWAY_USERNAME)`)
    .option('--password-stdin', 'read the password or robot secret from stdin (else GATEWAY_PASSWORD)')
    .option('--plain-http', 'talk HTTP instead of HTTPS')
    .option('--ca-file <file>', 'PEM CA bundle to trust for the gateway');
}

async function connection(flags: ConnectionFlags) {
  return {
    username: flags.username ?? process.env.GATEWAY_USERNAME,
    password: flags.passwordStdin ? await readSecret('Password: ') : process.env.GATEWAY_PASSWORD,
    plainHttp: flags.plainHttp,
    caFile: flags.caFile,
  };
}

export function registerAdmitCommand(program: Command): void {
  const command = program
    .command('admit')
    .description('wait for the verdict on an image pushed to the gateway (exit 0 admitted, 2 denied, 3 pending, 1 error)')
    .argument('<image>', 'gateway-host[:port]/repository[:tag|@digest]')
    .option('--wait <duration>', 'how long to wait for a final verdict (e.g. 60s, 5m; 0 = ask once)', '60s')
    .option('-o, --output <format>', 'table or json', 'table');
  withConnectionFlags(command, 'user or robot$name').action(async (image: string, opts: { wait: string; output: string } & ConnectionFlags) => {
    if (opts.output !== 'table' && opts.output !== 'json') {
      process.stderr.write('gateway admit: --output must be table or json\n');
      process.exitCode = EXIT.error;
      return;
    }
    const result = await runAdmit(image, { wait: opts.wait, output: opts.output, ...(await connection(opts)) });
    (result.exitCode === EXIT.error ? process.stderr : process.stdout).write(result.output);
    process.exitCode = result.exitCode;
  });
}

export function registerRescanCommand(program: Command): void {
  const command = program
    .command('rescan')
    .description('rescan admitted images for new vulnerabilities (administrators; exit 0 all still pass, 2 some would not, 1 error)')
    .argument('<gateway>', 'gateway host[:port]')
    .option('--repository <name>', 'only this repository')
    .option('--digest <digest>', 'only this image')
    .option('-o, --output <format>', 'table or json', 'table');
  withConnectionFlags(command, 'administrator').action(async (gateway: string, opts: { repository?: string; digest?: string; output: string } & ConnectionFlags) => {
    const result = await runRescan(gateway, { repository: opts.repository, digest: opts.digest }, {
      output: opts.output === 'json' ? 'json' : 'table',
      ...(await connection(opts)),
    });
    (result.exitCode === EXIT.error ? process.stderr : process.stdout).write(result.output);
    process.exitCode = result.exitCode;
  });
}
