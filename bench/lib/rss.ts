/** Resident memory of a process, from /proc/<pid>/status (Linux only). */
import { readFileSync, writeFileSync } from 'node:fs';

export interface MemoryStatus {
  rssKiB: number;
  hwmKiB: number;
}

export function readMemory(pid: number): MemoryStatus | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}

export interface RssReport {
  /** RSS when sampling started. */
  beforeMiB: number;
  /** Highest RSS seen: polled every interval, and VmHWM when it could be reset at start. */
  peakMiB: number;
  samples: number;
}

/**
 * Polls VmRSS every `intervalMs` between start() and stop(). At start it also resets the
 * kernel's high-water mark (`echo 5 > /proc/<pid>/clear_refs`, allowed for our own child)
 * so that VmHWM at stop() catches peaks shorter than the polling interval.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  private before = Number.NaN;
  private peak = 0;
  private samples = 0;
  private hwmReset = false;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 50,
  ) {}

  start(): this {
    try {
      writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      this.hwmReset = true;
    } catch {
      this.hwmReset = false;
    }
    const first = readMemory(this.pid);
    this.before = first ? first.rssKiB / 1024 : Number.NaN;
    this.peak = first ? first.rssKiB : 0;
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  private sample(): void {
    const m = readMemory(this.pid);
    if (!m) return;
    this.samples++;
    if (m.rssKiB > this.peak) this.peak = m.rssKiB;
  }

  stop(): RssReport {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const m = readMemory(this.pid);
    if (this.hwmReset && m && m.hwmKiB > this.peak) this.peak = m.hwmKiB;
    return { beforeMiB: this.before, peakMiB: this.peak / 1024, samples: this.samples };
  }
}
