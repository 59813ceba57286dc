/**
 * Group commit for the agents' step writes (intent before a provider call, booked after it), like
 * the Finisher does for finishes: writes requested while a statement is in flight go together in
 * the next one. Each row is still fenced on its own (bundle id, attempt, state 'running'), extends
 * its own lease and appends its own history row — it is the same statement, writeSteps, that
 * recordIntent/recordBooked run for a single write — and a row fenced out only fails its own
 * agent. Under load the statements per step fall well below one; when idle a write goes out at once.
 *
 * A row another session holds locked is skipped by the batch and written by its own agent alone,
 * outside the group (bounded wait), so it never delays the batch-mates. If a batched statement
 * fails, its writes are retried one by one, so one bad row cannot fail the agents that share it.
 */
import type pg from 'pg';
import type { LocalRecord } from '../bundles/kinds.js';
import { writeStepAlone, writeSteps, type Fence, type StepWrite } from './fenced-writes.js';
import { GroupCommit } from './group-commit.js';

const BUSY = Symbol('busy');

export class StepWriter {
  private readonly group: GroupCommit<StepWrite, string | null | typeof BUSY>;

  constructor(private readonly pool: pg.Pool, maxBatch = 500) {
    this.group = new GroupCommit({
      maxBatch,
      // An agent waits for each of its writes, so one per bundle per statement only guards against misuse.
      key: (w) => w.fence.bundleId,
      retrySingly: true,
      write: async (batch) => {
        const { written, busy } = await writeSteps(pool, batch);
        return batch.map((w) => (busy.has(w.fence.bundleId) ? BUSY : written.get(w.fence.bundleId) ?? null));
      },
    });
  }

  private async write(w: StepWrite): Promise<string | null> {
    const result = await this.group.submit(w);
    return result === BUSY ? writeStepAlone(this.pool, w) : result;
  }

  /** Like recordIntent: the step's stable key, or null when a newer attempt owns the bundle. */
  intent(fence: Fence, position: number, name: string, key: string): Promise<string | null> {
    return this.write({ fence, position, name, key, status: 'booking', reference: null });
  }

  /** Like recordBooked: false when a newer attempt owns the bundle. */
  async booked(fence: Fence, position: number, name: string, key: string, reference: string, local?: LocalRecord): Promise<boolean> {
    return (await this.write({ fence, position, name, key, status: 'booked', reference, local })) !== null;
  }
}
