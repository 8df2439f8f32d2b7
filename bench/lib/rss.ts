/** Resident memory and CPU time of a process, from /proc/<pid>/status and /proc/<pid>/stat (Linux only). */
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

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ, 100 on Linux's architectures). */
const USER_HZ = 100;

/** CPU time (user + system, all threads) that `pid` has used so far, in ms; NaN when unreadable. */
export function readCpuMs(pid: number): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return Number.NaN;
  }
  // After the command name (in parentheses, which may hold spaces) come fields 3, 4, ...; utime and stime are 14 and 15.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[14 - 3]) + Number(fields[15 - 3])) * 1000) / USER_HZ;
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
