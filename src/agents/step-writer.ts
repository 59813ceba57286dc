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
import { writeStepAlone, writeSteps, writtenKey, type Fence, type StepWrite } from './fenced-writes.js';
import { GroupCommit } from './group-commit.js';

const BUSY = Symbol('busy');

/** A step's outcome that is written with the next step's intent, in one statement (see `intent`). */
export interface BookedStep {
  position: number;
  name: string;
  key: string;
  reference: string;
  local?: LocalRecord;
}

export class StepWriter {
  /** Each item is one bundle's rows: one write, or an outcome and the next intent. */
  private readonly group: GroupCommit<StepWrite[], string | null | typeof BUSY>;

  constructor(private readonly pool: pg.Pool, maxBatch = 500) {
    this.group = new GroupCommit({
      maxBatch,
      // An agent waits for each of its writes, so one per bundle per statement only guards against misuse.
      key: (rows) => rows[0]!.fence.bundleId,
      retrySingly: true,
      write: async (batch) => {
        const { written, busy } = await writeSteps(pool, batch.flat());
        return batch.map((rows) => {
          const last = rows[rows.length - 1]!;
          return busy.has(last.fence.bundleId) ? BUSY : written.get(writtenKey(last.fence.bundleId, last.position)) ?? null;
        });
      },
    });
  }

  /** The stored key of the last row, or null when fenced out. */
  private async write(rows: StepWrite[]): Promise<string | null> {
    const result = await this.group.submit(rows);
    return result === BUSY ? writeStepAlone(this.pool, ...rows) : result;
  }

  /**
   * Like recordIntent: the step's stable key, or null when a newer attempt owns the bundle. With
   * `previous`, the step before it is recorded booked in the same statement: nothing happens
   * between the two writes, so they need not wait for each other (measured on 5a: 7 step writes
   * per bundle became 4).
   */
  intent(fence: Fence, position: number, name: string, key: string, previous?: BookedStep): Promise<string | null> {
    const rows: StepWrite[] = previous ? [{ fence, ...previous, status: 'booked' }] : [];
    rows.push({ fence, position, name, key, status: 'booking', reference: null });
    return this.write(rows);
  }

  /** Like recordBooked: false when a newer attempt owns the bundle. */
  async booked(fence: Fence, step: BookedStep): Promise<boolean> {
    return (await this.write([{ fence, ...step, status: 'booked' }])) !== null;
  }
}
