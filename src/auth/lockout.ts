/**
 * Brute-force defence: failures are counted per principal name and per source address in
 * a sliding window. Past `slowdownAfter` failures each answer is delayed (doubling, up to
 * 4 s); at `maxFailures` the key is locked for `lockSeconds`, even for the right password.
 * In memory, per replica.
 */
export interface LockoutPolicy {
  slowdownAfter: number;
  maxFailures: number;
  windowSeconds: number;
  lockSeconds: number;
}

interface Entry {
  failures: number[];
  lockedUntil: number;
}

export type LockState = { locked: false; delayMs: number } | { locked: true; retryAfterSeconds: number };

const MAX_DELAY_MS = 4000;

export class Lockout {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly policy: LockoutPolicy,
    private readonly now: () => number = Date.now,
  ) {}

  /** The strictest state among the keys (e.g. `user:alice` and `ip:10.0.0.1`). */
  state(keys: string[]): LockState {
    const now = this.now();
    let delayMs = 0;
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (!entry) continue;
      if (entry.lockedUntil > now) return { locked: true, retryAfterSeconds: Math.ceil((entry.lockedUntil - now) / 1000) };
      const recent = this.recent(entry, now);
      if (recent > this.policy.slowdownAfter) {
        delayMs = Math.max(delayMs, Math.min(250 * 2 ** (recent - this.policy.slowdownAfter - 1), MAX_DELAY_MS));
      }
    }
    return { locked: false, delayMs };
  }

  /** Records a failure; returns the keys that just became locked. */
  fail(keys: string[]): string[] {
    const now = this.now();
    const locked: string[] = [];
    for (const key of keys) {
      const entry = this.entries.get(key) ?? { failures: [], lockedUntil: 0 };
      entry.failures.push(now);
      if (this.recent(entry, now) >= this.policy.maxFailures && entry.lockedUntil <= now) {
        entry.lockedUntil = now + this.policy.lockSeconds * 1000;
        entry.failures = [];
        locked.push(key);
      }
      this.entries.set(key, entry);
    }
    this.prune(now);
    return locked;
  }

  succeed(key: string): void {
    const entry = this.entries.get(key);
    if (entry && entry.lockedUntil <= this.now()) this.entries.delete(key);
  }

  private recent(entry: Entry, now: number): number {
    const since = now - this.policy.windowSeconds * 1000;
    entry.failures = entry.failures.filter((t) => t > since);
    return entry.failures.length;
  }

  private prune(now: number): void {
    if (this.entries.size < 10_000) return;
    for (const [key, entry] of this.entries) {
      if (entry.lockedUntil <= now && this.recent(entry, now) === 0) this.entries.delete(key);
    }
  }
}
