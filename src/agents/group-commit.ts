/**
 * Group commit for agents' writes: items submitted while a statement is in flight go together in
 * the next one, so under load many agents share one statement and one transaction, and when idle
 * an item is written at once (no timer, no added latency). The Finisher and the StepWriter are
 * both this, with their own statement.
 */
export interface GroupCommitOptions<T, R> {
  /** Writes a batch; returns one result per item, in the batch's order. */
  write(batch: T[]): Promise<R[]>;
  maxBatch: number;
  /** Items with the same key never share a statement (the later one waits for the next). */
  key?(item: T): string;
  /** When a whole batch fails: write each item alone, so one bad item fails only its own caller. */
  retrySingly?: boolean;
}

interface Queued<T, R> {
  item: T;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export class GroupCommit<T, R> {
  private queue: Array<Queued<T, R>> = [];
  private flushing = false;

  constructor(private readonly opts: GroupCommitOptions<T, R>) {}

  submit(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private takeBatch(): Array<Queued<T, R>> {
    const { key, maxBatch } = this.opts;
    if (!key) return this.queue.splice(0, maxBatch);
    const batch: Array<Queued<T, R>> = [];
    const rest: Array<Queued<T, R>> = [];
    const seen = new Set<string>();
    for (const q of this.queue) {
      const k = key(q.item);
      if (batch.length < maxBatch && !seen.has(k)) {
        seen.add(k);
        batch.push(q);
      } else rest.push(q);
    }
    this.queue = rest;
    return batch;
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        const batch = this.takeBatch();
        try {
          const results = await this.opts.write(batch.map((q) => q.item));
          batch.forEach((q, i) => q.resolve(results[i]!));
        } catch (err) {
          if (!this.opts.retrySingly || batch.length === 1) {
            for (const q of batch) q.reject(err);
            continue;
          }
          await Promise.all(
            batch.map((q) => this.opts.write([q.item]).then(([result]) => q.resolve(result!), q.reject)),
          );
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
