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
import { GroupCommit } from './group-commit.js';

export class StepWriter {
  private readonly group: GroupCommit<StepWrite, string | null>;

  constructor(pool: pg.Pool, maxBatch = 500) {
    this.group = new GroupCommit({
      maxBatch,
      // An agent waits for each of its writes, so one per bundle per statement only guards against misuse.
      key: (w) => w.fence.bundleId,
      retrySingly: true,
      write: async (batch) => {
        const written = await writeSteps(pool, batch);
        return batch.map((w) => written.get(w.fence.bundleId) ?? null);
      },
    });
  }

  /** Like recordIntent: the step's stable key, or null when a newer attempt owns the bundle. */
  intent(fence: Fence, position: number, name: string, key: string): Promise<string | null> {
    return this.group.submit({ fence, position, name, key, status: 'booking', reference: null });
  }

  /** Like recordBooked: false when a newer attempt owns the bundle. */
  async booked(fence: Fence, position: number, name: string, key: string, reference: string): Promise<boolean> {
    return (await this.group.submit({ fence, position, name, key, status: 'booked', reference })) !== null;
  }
}
