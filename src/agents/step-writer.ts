/**
 * Group commit for the agents' step writes (intent before a provider call, booked after it), like
 * the Finisher does for finishes: writes requested while a statement is in flight go together in
 * the next one. Each row is still fenced on its own (bundle id, attempt, state 'running'), extends
 * its own lease and appends its own history row — it is the same statement, writeSteps, that
 * recordIntent/recordBooked run for a single write — and a row fenced out only fails its own
 * agent. Under load the statements per step fall well below one; when idle a write goes out at once.
 *
 * If a batched statement fails, its writes are retried one by one, so one bad row cannot fail
 * the agents that share its batch.
 */
import type pg from 'pg';
import { writeSteps, type Fence, type StepWrite } from './fenced-writes.js';

interface PendingWrite extends StepWrite {
  /** The step's idempotency key when written; null when fenced out. */
  resolve(result: string | null): void;
  reject(err: unknown): void;
}

export class StepWriter {
  private queue: PendingWrite[] = [];
  private flushing = false;

  constructor(private readonly pool: pg.Pool, private readonly maxBatch = 500) {}

  /** Like recordIntent: the step's stable key, or null when a newer attempt owns the bundle. */
  intent(fence: Fence, position: number, name: string, key: string): Promise<string | null> {
    return this.push({ fence, position, name, key, status: 'booking', reference: null });
  }

  /** Like recordBooked: false when a newer attempt owns the bundle. */
  async booked(fence: Fence, position: number, name: string, key: string, reference: string): Promise<boolean> {
    return (await this.push({ fence, position, name, key, status: 'booked', reference })) !== null;
  }

  private push(write: StepWrite): Promise<string | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...write, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        // One write per bundle per statement (an agent waits for each of its writes, so this only
        // guards against misuse): a second one for the same bundle waits for the next statement.
        const batch: PendingWrite[] = [];
        const rest: PendingWrite[] = [];
        const ids = new Set<string>();
        for (const w of this.queue) {
          if (batch.length < this.maxBatch && !ids.has(w.fence.bundleId)) {
            ids.add(w.fence.bundleId);
            batch.push(w);
          } else rest.push(w);
        }
        this.queue = rest;
        try {
          const written = await writeSteps(this.pool, batch);
          for (const w of batch) w.resolve(written.get(w.fence.bundleId) ?? null);
        } catch {
          // One bad row must not fail the agents that shared its statement: write them one by one.
          await Promise.all(batch.map((w) => this.writeOne(w)));
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private async writeOne(w: PendingWrite): Promise<void> {
    try {
      w.resolve((await writeSteps(this.pool, [w])).get(w.fence.bundleId) ?? null);
    } catch (err) {
      w.reject(err);
    }
  }
}
