/** Timing, percentiles, closed-loop load generation and the result table. */
import { performance } from 'node:perf_hooks';

export function now(): number {
  return performance.now();
}

/** Nearest-rank percentile of already sorted values (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs `fn`, returning its result and how long it took in milliseconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const start = now();
  const result = await fn();
  return { result, ms: now() - start };
}

export interface LoadResult {
  requests: number;
  elapsedMs: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Every measured request's latency, sorted. */
  latencies: number[];
  /** The `seq` after the last one handed to `op`. */
  nextSeq: number;
}

export interface LoadOptions {
  concurrency: number;
  durationMs: number;
  /** Requests run (and not measured) before the timed window, spread over the workers. */
  warmup?: number;
  /** Keep warming up (every worker, back to back) until this long has passed, whatever `warmup` says. */
  warmupMs?: number;
  /** Stop early after this many measured requests. */
  maxRequests?: number;
  /** The first `seq` handed to `op` (default 0). */
  firstSeq?: number;
}

/**
 * A closed loop: `concurrency` workers each run `op(seq)` back to back until the duration
 * is over. `seq` is unique across workers (warm-up requests included). The first error stops
 * every worker and is thrown.
 */
export async function closedLoop(options: LoadOptions, op: (seq: number) => Promise<void>): Promise<LoadResult> {
  let seq = options.firstSeq ?? 0;
  let failure: unknown;
  const warmup = options.warmup ?? 0;
  let warmupLeft = warmup;
  const warmUntil = now() + (options.warmupMs ?? 0);
  const warming = () => warmupLeft > 0 || now() < warmUntil;
  const warmers = options.warmupMs ? options.concurrency : Math.min(options.concurrency, Math.max(warmup, 0));
  await Promise.all(
    Array.from({ length: warmers }, async () => {
      while (warming() && failure === undefined) {
        warmupLeft--;
        try {
          await op(seq++);
        } catch (err) {
          failure ??= err;
        }
      }
    }),
  );
  if (failure !== undefined) throw failure;

  const latencies: number[] = [];
  const start = now();
  const deadline = start + options.durationMs;
  const max = options.maxRequests ?? Number.POSITIVE_INFINITY;
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (failure === undefined && latencies.length < max && now() < deadline) {
        const t0 = now();
        try {
          await op(seq++);
        } catch (err) {
          failure ??= err;
          return;
        }
        latencies.push(now() - t0);
      }
    }),
  );
  const elapsedMs = now() - start;
  if (failure !== undefined) throw failure;
  return loadResult(latencies, elapsedMs, seq);
}

function loadResult(latencies: number[], elapsedMs: number, nextSeq: number): LoadResult {
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    elapsedMs,
    perSecond: (latencies.length / elapsedMs) * 1000,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    latencies,
    nextSeq,
  };
}

/**
 * The closed loop of `options` measured in `windows` windows of `durationMs / windows`,
 * each after `beforeWindow()` (the bench's turn, where the other registry runs its own
 * window): the first after the warm-up of `options`, later ones after one request per
 * worker. The result covers every window: requests over their summed time, percentiles
 * of all their latencies.
 */
export async function windowedLoop(
  options: LoadOptions,
  windows: number,
  beforeWindow: () => Promise<void>,
  op: (seq: number) => Promise<void>,
): Promise<LoadResult> {
  const all: number[] = [];
  let elapsedMs = 0;
  let firstSeq = options.firstSeq ?? 0;
  for (let w = 0; w < windows; w++) {
    await beforeWindow();
    const warm = w === 0 ? { warmup: options.warmup, warmupMs: options.warmupMs } : { warmup: options.concurrency, warmupMs: undefined };
    const res = await closedLoop({ ...options, ...warm, durationMs: options.durationMs / windows, firstSeq }, op);
    for (const latency of res.latencies) all.push(latency);
    elapsedMs += res.elapsedMs;
    firstSeq = res.nextSeq;
  }
  return loadResult(all, elapsedMs, firstSeq);
}

/** Runs `fn(i)` for i in 0..count-1 with at most `concurrency` at a time. */
export async function inParallel(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count && failure === undefined) {
        const i = next++;
        try {
          await fn(i);
        } catch (err) {
          failure ??= err;
        }
      }
    }),
  );
  if (failure !== undefined) throw failure;
}

// --- formatting ------------------------------------------------------------------------------

export function formatValue(value: number | undefined): string {
  if (value === undefined || Number.isNaN(value)) return '-';
  const abs = Math.abs(value);
  if (abs >= 1000) return value.toFixed(0);
  if (abs >= 100) return value.toFixed(1);
  if (abs >= 10) return value.toFixed(2);
  return value.toFixed(3);
}

export function formatRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return '-';
  return `${ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}x`;
}

/** A plain-text table with `|` separators; numeric-looking cells are right-aligned. */
export function renderTable(headers: string[], rows: string[][], sectionRows: Map<number, string> = new Map()): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i > 0 && /^[-\d.,x ]+$|^[\d.]+ ?\S*$/.test(c) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join(' | ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('-|-');
  const out = [line(headers), rule];
  rows.forEach((row, i) => {
    const section = sectionRows.get(i);
    if (section !== undefined) out.push(`${section}`);
    out.push(line(row));
  });
  return out.join('\n');
}
