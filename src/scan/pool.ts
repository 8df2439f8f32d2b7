/** A bounded pool: at most `workers` tasks at once, at most `queueSize` waiting; each task gets a worker number. */
export class QueueFullError extends Error {}

export class WorkerPool {
  private readonly free: number[];
  private readonly waiting: Array<(worker: number) => void> = [];
  /** Tasks started so far (for tests and metrics). */
  started = 0;

  constructor(
    readonly workers: number,
    readonly queueSize: number,
  ) {
    this.free = Array.from({ length: workers }, (_, i) => i);
  }

  get running(): number {
    return this.workers - this.free.length;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: (worker: number) => Promise<T>): Promise<T> {
    let worker = this.free.pop();
    if (worker === undefined) {
      if (this.waiting.length >= this.queueSize) throw new QueueFullError(`the scan queue is full (${this.waiting.length} waiting)`);
      // A finishing task hands its worker straight to the longest waiter.
      worker = await new Promise<number>((resolve) => this.waiting.push(resolve));
    }
    this.started++;
    try {
      return await task(worker);
    } finally {
      const next = this.waiting.shift();
      if (next) next(worker);
      else this.free.push(worker);
    }
  }
}
