/**
 * The bench harness: each case runs against both targets (same operations, fresh repository
 * names), taking turns: the reference runs until the case calls `ctx.turn()`, then the
 * gateway until it does, and so on, so rounds of a measurement alternate between the two.
 * Metrics are collected per target, a failure is recorded with its request and response and
 * the run goes on. A new kind of benchmark is a new {@link BenchCase} in bench/run.ts (or its
 * own module) that records metrics.
 */
import { execFileSync } from 'node:child_process';
import { HttpError, OciClient } from './client.js';
import { RUN_ID } from './data.js';
import type { Target, TargetKind } from './servers.js';
import { formatRatio, formatValue, now, renderTable } from './stats.js';

export type Better = 'higher' | 'lower';

export interface Metric {
  /** Section of the final table. */
  group: string;
  /** Row label, identical for both targets (it is the join key). */
  label: string;
  unit: string;
  better: Better;
  value: number;
  /** Shown as a numbered footnote under the table (e.g. "the server ignored n=100"). */
  footnote?: string;
}

export interface CaseContext {
  readonly target: Target;
  readonly quick: boolean;
  /** A client whose agent keeps `maxSockets` keep-alive sockets; closed after the case. */
  client(maxSockets: number): OciClient;
  /** A repository name not used before in this run. */
  repo(prefix: string): string;
  /** Records one figure for the table (shown at once as progress too). */
  record(metric: Omit<Metric, 'group'> & { group?: string }): void;
  /** A remark printed with the results (e.g. "server ignored n"). */
  note(text: string): void;
  /**
   * Lets the other target run the same case up to its own next turn (or its end), then
   * resumes. A case calls it before each timed round, so that the rounds of the two targets
   * alternate and a change in the machine's speed during the run (a shared VM) falls on
   * both alike, not on whichever ran in the slow minute. At each hand-over the target whose
   * turn ends is paused (SIGSTOP: its background work, such as the gateway's database
   * housekeeping, runs in its own turns, not in the other's) and dirty pages are written out.
   */
  turn(): Promise<void>;
}

export interface BenchCase {
  id: string;
  title: string;
  /** Default section for the metrics this case records. */
  group: string;
  run(ctx: CaseContext): Promise<void>;
}

export interface CaseOutcome {
  caseId: string;
  title: string;
  kind: TargetKind;
  metrics: Metric[];
  notes: string[];
  error?: string;
  seconds: number;
}

export const TARGET_ORDER: readonly TargetKind[] = ['reference', 'gateway'];

export interface SuiteOptions {
  quick: boolean;
  /** (Re)starts a target; called at first use and whenever it is found dead. */
  start(kind: TargetKind): Promise<Target>;
  log?: (line: string) => void;
}

export class Suite {
  readonly outcomes: CaseOutcome[] = [];
  private readonly targets = new Map<TargetKind, Target>();
  private repoCounter = 0;
  private readonly log: (line: string) => void;

  constructor(private readonly options: SuiteOptions) {
    this.log = options.log ?? ((line) => process.stdout.write(`${line}\n`));
  }

  async target(kind: TargetKind): Promise<Target> {
    const existing = this.targets.get(kind);
    if (existing?.alive()) return existing;
    if (existing) {
      this.log(`  !! ${kind} is not running any more (output below); restarting it with a fresh data directory\n${indent(existing.logTail())}`);
      await existing.stop();
    }
    const target = await this.options.start(kind);
    this.targets.set(kind, target);
    return target;
  }

  async stopAll(): Promise<void> {
    const all = [...this.targets.values()];
    this.targets.clear();
    await Promise.all(all.map((t) => t.stop()));
  }

  async run(cases: BenchCase[]): Promise<void> {
    for (const benchCase of cases) {
      this.log(`\n== ${benchCase.title}`);
      const targets: Target[] = [];
      for (const kind of TARGET_ORDER) targets.push(await this.target(kind));
      const handTo = (kind: TargetKind) => {
        for (const t of targets) if (t.kind !== kind) t.pause();
        flushDirtyPages();
        for (const t of targets) if (t.kind === kind) t.resume();
      };
      const baton = new Baton(TARGET_ORDER, handTo);
      handTo(TARGET_ORDER[0] as TargetKind);
      try {
        const outcomes = await Promise.all(targets.map((target) => baton.run(target.kind, () => this.runOne(benchCase, target, baton))));
        this.outcomes.push(...outcomes);
      } finally {
        for (const t of targets) t.resume();
      }
      this.printCaseSummary(benchCase.id);
    }
  }

  private async runOne(benchCase: BenchCase, target: Target, baton: Baton): Promise<CaseOutcome> {
    const outcome: CaseOutcome = { caseId: benchCase.id, title: benchCase.title, kind: target.kind, metrics: [], notes: [], seconds: 0 };
    const clients: OciClient[] = [];
    const ctx: CaseContext = {
      target,
      quick: this.options.quick,
      client: (maxSockets) => {
        const c = new OciClient(target.baseUrl, { maxSockets });
        clients.push(c);
        return c;
      },
      repo: (prefix) => `bench/${prefix}-${RUN_ID}-${target.kind}-${++this.repoCounter}`,
      record: (m) => outcome.metrics.push({ group: benchCase.group, ...m }),
      note: (text) => outcome.notes.push(text),
      turn: () => baton.pass(target.kind),
    };
    const start = now();
    try {
      await benchCase.run(ctx);
    } catch (err) {
      outcome.error = describeError(err);
      if (!target.alive()) outcome.error += `\n${target.kind} process died; its last output:\n${indent(target.logTail())}`;
      else if (target.logTail().trim()) outcome.error += `\n${target.kind} output (last lines):\n${indent(lastLines(target.logTail(), 15))}`;
    } finally {
      for (const c of clients) c.close();
      outcome.seconds = (now() - start) / 1000;
    }
    return outcome;
  }

  private printCaseSummary(caseId: string): void {
    const rows = this.joinRows(this.outcomes.filter((o) => o.caseId === caseId));
    for (const row of rows) {
      this.log(`   ${row.label}${row.unit ? ` [${row.unit}]` : ''}: reference ${cell(row.ref)}, gateway ${cell(row.gw)}, ratio ${row.ratio} (better if ${row.better})`);
    }
    for (const o of this.outcomes.filter((x) => x.caseId === caseId)) {
      for (const n of o.notes) this.log(`   note (${o.kind}): ${n}`);
      if (o.error) this.log(`   FAILED (${o.kind}) after ${o.seconds.toFixed(1)} s: ${o.error}`);
    }
  }

  /** Table rows of some outcomes, in first-seen order, joined by label. */
  private joinRows(outcomes: CaseOutcome[]): JoinedRow[] {
    const rows = new Map<string, JoinedRow>();
    for (const o of outcomes) {
      for (const m of o.metrics) {
        const key = `${m.label}\0${m.unit}`;
        let row = rows.get(key);
        if (!row) {
          row = { group: m.group, label: m.label, unit: m.unit, better: m.better, ratio: '-' };
          rows.set(key, row);
        }
        if (o.kind === 'reference') {
          row.ref = m.value;
          row.refNote = m.footnote;
        } else {
          row.gw = m.value;
          row.gwNote = m.footnote;
        }
      }
    }
    const byKind = (kind: TargetKind) => outcomes.filter((o) => o.kind === kind);
    for (const row of rows.values()) {
      if (row.ref === undefined && byKind('reference').some((o) => o.error)) row.ref = 'FAILED';
      if (row.gw === undefined && byKind('gateway').some((o) => o.error)) row.gw = 'FAILED';
      row.ratio = typeof row.ref === 'number' && typeof row.gw === 'number' && row.ref !== 0 ? formatRatio(row.gw / row.ref) : '-';
      row.verdict = verdict(row);
    }
    // A failure that no row shows yet (nothing left unrecorded) gets a row of its own.
    const failedIn = (k: TargetKind) => outcomes.some((o) => o.kind === k && o.error);
    const shown = (k: TargetKind) => [...rows.values()].some((r) => (k === 'reference' ? r.ref : r.gw) === 'FAILED');
    const refMissing = failedIn('reference') && !shown('reference');
    const gwMissing = failedIn('gateway') && !shown('gateway');
    if (refMissing || gwMissing) {
      const o = outcomes.find((x) => x.error) as CaseOutcome;
      rows.set(`#${o.caseId}`, {
        group: o.metrics[0]?.group ?? '',
        label: `${o.title} (did not finish)`,
        unit: '',
        better: 'higher',
        ref: refMissing ? 'FAILED' : undefined,
        gw: gwMissing ? 'FAILED' : undefined,
        ratio: '-',
        verdict: '',
      });
    }
    return [...rows.values()];
  }

  /** The final table; sections follow `groupOrder` (then any others). */
  renderResults(groupOrder: string[], groupOf: (caseId: string) => string): string {
    const rows = this.joinRowsWithGroups(groupOf);
    const groups = [...groupOrder, ...new Set(rows.map((r) => r.group).filter((g) => !groupOrder.includes(g)))];
    const ordered: JoinedRow[] = [];
    const sections = new Map<number, string>();
    for (const g of groups) {
      const inGroup = rows.filter((r) => r.group === g);
      if (inGroup.length === 0) continue;
      sections.set(ordered.length, `-- ${g}`);
      ordered.push(...inGroup);
    }
    const footnotes: string[] = [];
    const mark = (text: string, kind: TargetKind, note: string | undefined) => {
      if (!note) return text;
      footnotes.push(`(${footnotes.length + 1}) ${kind}: ${note}`);
      return `${text} (${footnotes.length})`;
    };
    const table = renderTable(
      ['row', 'reference', 'gateway', 'ratio (gateway/ref)', 'better if', 'gateway is'],
      ordered.map((r) => [
        `${r.label}${r.unit ? ` [${r.unit}]` : ''}`,
        mark(cell(r.ref), 'reference', r.refNote),
        mark(cell(r.gw), 'gateway', r.gwNote),
        r.ratio,
        r.better,
        r.verdict ?? '',
      ]),
      sections,
    );
    const failures = this.outcomes
      .filter((o) => o.error)
      .map((o) => `[${o.kind}] ${o.title}:\n${indent(o.error ?? '')}`);
    const notes = this.outcomes.flatMap((o) => o.notes.map((n) => `[${o.kind}] ${o.title}: ${n}`));
    return [table, footnotes.join('\n'), notes.length ? `\nNotes:\n${notes.join('\n')}` : '', failures.length ? `\nFailures:\n${failures.join('\n')}` : '']
      .filter(Boolean)
      .join('\n');
  }

  private joinRowsWithGroups(groupOf: (caseId: string) => string): JoinedRow[] {
    const caseIds = [...new Set(this.outcomes.map((o) => o.caseId))];
    return caseIds.flatMap((id) =>
      this.joinRows(this.outcomes.filter((o) => o.caseId === id)).map((r) => ({ ...r, group: r.group || groupOf(id) })),
    );
  }

  get failed(): boolean {
    return this.outcomes.some((o) => o.error);
  }
}

interface JoinedRow {
  group: string;
  label: string;
  unit: string;
  better: Better;
  ref?: number | 'FAILED';
  gw?: number | 'FAILED';
  refNote?: string;
  gwNote?: string;
  ratio: string;
  verdict?: string;
}

function cell(v: number | 'FAILED' | undefined): string {
  return typeof v === 'number' ? formatValue(v) : (v ?? '-');
}

/** "better" / "worse" / "same" (within 5%) from the gateway's point of view. */
function verdict(row: JoinedRow): string {
  if (typeof row.ref !== 'number' || typeof row.gw !== 'number' || row.ref === 0) return '';
  const ratio = row.gw / row.ref;
  if (Math.abs(ratio - 1) <= 0.05) return 'same';
  const higherIsBetter = row.better === 'higher';
  return ratio > 1 === higherIsBetter ? 'better' : 'worse';
}

export function describeError(err: unknown): string {
  if (err instanceof HttpError) {
    const hdrs = Object.entries(err.headers)
      .filter(([k]) => ['content-type', 'location', 'range', 'docker-upload-uuid', 'x-request-id'].includes(k))
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join('; ');
    return `request ${err.method} ${err.path}\nresponse ${err.status}${hdrs ? ` (${hdrs})` : ''}\nbody: ${err.responseBody.slice(0, 2000) || '(empty)'}`;
  }
  // The client's own errors name the request already; anything else may be a bench bug.
  if (err instanceof Error) return /^(GET|HEAD|PUT|POST|PATCH|DELETE) \//.test(err.message) ? err.message : (err.stack ?? err.message);
  return String(err);
}

function lastLines(text: string, count: number): string {
  return text.trimEnd().split('\n').slice(-count).join('\n');
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

/**
 * Which target may run now. Exactly one holds it; `pass` hands it to the next target still
 * running (in TARGET_ORDER, round robin) and waits until it comes back; `leave` hands it on
 * for good. A target alone keeps it.
 */
export class Baton {
  private holder: TargetKind;
  private readonly waiting = new Map<TargetKind, () => void>();
  private readonly finished = new Set<TargetKind>();

  constructor(
    private readonly order: readonly TargetKind[],
    /** Runs at each hand-over, with the target about to run (pauses the other, writes dirty pages out). */
    private readonly onHand: (kind: TargetKind) => void,
  ) {
    this.holder = order[0] as TargetKind;
  }

  /** Runs `fn` for `kind` once it holds the baton, and hands the baton on for good when `fn` ends. */
  async run<T>(kind: TargetKind, fn: () => Promise<T>): Promise<T> {
    await this.wait(kind);
    try {
      return await fn();
    } finally {
      this.leave(kind);
    }
  }

  /** Resolves once `kind` holds the baton. */
  wait(kind: TargetKind): Promise<void> {
    if (this.holder === kind) return Promise.resolve();
    return new Promise((resolve) => this.waiting.set(kind, resolve));
  }

  async pass(kind: TargetKind): Promise<void> {
    const next = this.next(kind);
    if (next === kind) return;
    this.hand(next);
    await this.wait(kind);
  }

  leave(kind: TargetKind): void {
    this.finished.add(kind);
    const next = this.next(kind);
    if (next !== kind) this.hand(next);
  }

  /** The next target after `kind` that has not finished; `kind` itself when there is none. */
  private next(kind: TargetKind): TargetKind {
    const at = this.order.indexOf(kind);
    for (let i = 1; i < this.order.length; i++) {
      const candidate = this.order[(at + i) % this.order.length] as TargetKind;
      if (!this.finished.has(candidate)) return candidate;
    }
    return kind;
  }

  private hand(kind: TargetKind): void {
    this.onHand(kind);
    this.holder = kind;
    const resume = this.waiting.get(kind);
    this.waiting.delete(kind);
    resume?.();
  }
}

/** Writes dirty pages out so one target's writeback does not land in the other's timing. */
export function flushDirtyPages(): void {
  try {
    execFileSync('sync', { stdio: 'ignore' });
  } catch {
    // not fatal
  }
}
