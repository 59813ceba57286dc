/**
 * Group commit for the agents' step writes (intent before a provider call, booked after it), like
 * the Finisher does for finishes: writes requested while a statement is in flight go together in
 * the next one. Each row is still fenced on its own (bundle id, attempt, state 'running'), extends
 * its own lease and appends its own history row, exactly as recordIntent/recordBooked do one at a
 * time; a row fenced out only fails its own agent. Under load the statements per step fall well
 * below one; when idle a write goes out at once.
 *
 * If a batched statement fails, its writes are retried one by one with recordIntent/recordBooked,
 * so one bad row cannot fail the agents that share its batch.
 */
import type pg from 'pg';
import { recordBooked, recordIntent, type Fence } from './fenced-writes.js';

interface StepWrite {
  fence: Fence;
  position: number;
  name: string;
  key: string;
  /** 'booking' records the intent; 'booked' records the outcome. */
  status: 'booking' | 'booked';
  reference: string | null;
  /** The step's idempotency key (intent) or the bundle id (booked) when written; null when fenced out. */
  resolve(result: string | null): void;
  reject(err: unknown): void;
}

const stepWritesSql = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::float8[], $5::smallint[], $6::text[], $7::text[], $8::text[], $9::text[])
    AS t(id, attempt, actor, lease, position, name, status, key, reference)
), fence AS (
  UPDATE bundles b SET locked_until = now() + make_interval(secs => i.lease), updated_at = now()
  FROM input i
  WHERE b.id = i.id AND b.attempt = i.attempt AND b.state = 'running'
  RETURNING b.id
), ok AS (
  SELECT i.* FROM input i JOIN fence f ON f.id = i.id
), step AS (
  INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, attempt)
  SELECT id, position, name, status, key, reference, attempt FROM ok
  ON CONFLICT (bundle_id, position) DO UPDATE SET
    status = EXCLUDED.status,
    attempt = CASE WHEN EXCLUDED.status = 'booking' THEN EXCLUDED.attempt ELSE steps.attempt END,
    reference = CASE WHEN EXCLUDED.status = 'booked' THEN EXCLUDED.reference ELSE steps.reference END,
    error = CASE WHEN EXCLUDED.status = 'booked' THEN NULL ELSE steps.error END,
    updated_at = now()
  RETURNING bundle_id, idempotency_key
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
  SELECT id, actor, attempt, 'running', 'running', name, CASE status WHEN 'booking' THEN 'booking' ELSE 'booked ' || reference END FROM ok
)
SELECT ok.id, ok.status, step.idempotency_key FROM ok JOIN step ON step.bundle_id = ok.id`;

export class StepWriter {
  private queue: StepWrite[] = [];
  private flushing = false;

  constructor(private readonly pool: pg.Pool, private readonly maxBatch = 500) {}

  /** Like recordIntent: the step's stable key, or null when a newer attempt owns the bundle. */
  intent(fence: Fence, position: number, name: string, key: string): Promise<string | null> {
    return this.push(fence, position, name, key, 'booking', null);
  }

  /** Like recordBooked: false when a newer attempt owns the bundle. */
  async booked(fence: Fence, position: number, name: string, key: string, reference: string): Promise<boolean> {
    return (await this.push(fence, position, name, key, 'booked', reference)) !== null;
  }

  private push(fence: Fence, position: number, name: string, key: string, status: StepWrite['status'], reference: string | null): Promise<string | null> {
    return new Promise((resolve, reject) => {
      this.queue.push({ fence, position, name, key, status, reference, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        // One write per bundle per statement (an agent waits for each of its writes, so this only
        // guards against misuse): a second one for the same bundle waits for the next statement.
        const batch: StepWrite[] = [];
        const rest: StepWrite[] = [];
        const ids = new Set<string>();
        for (const w of this.queue) {
          if (batch.length < this.maxBatch && !ids.has(w.fence.bundleId)) {
            ids.add(w.fence.bundleId);
            batch.push(w);
          } else rest.push(w);
        }
        this.queue = rest;
        try {
          const written = await this.write(batch);
          for (const w of batch) w.resolve(written.get(w.fence.bundleId) ?? null);
        } catch {
          await Promise.all(batch.map((w) => this.writeOne(w)));
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private async write(batch: StepWrite[]): Promise<Map<string, string>> {
    const { rows } = await this.pool.query<{ id: string; status: string; idempotency_key: string }>(stepWritesSql, [
      batch.map((w) => w.fence.bundleId),
      batch.map((w) => w.fence.attempt),
      batch.map((w) => w.fence.actor),
      batch.map((w) => w.fence.leaseSeconds),
      batch.map((w) => w.position),
      batch.map((w) => w.name),
      batch.map((w) => w.status),
      batch.map((w) => w.key),
      batch.map((w) => w.reference),
    ]);
    return new Map(rows.map((r) => [r.id, r.status === 'booking' ? r.idempotency_key : r.id]));
  }

  private async writeOne(w: StepWrite): Promise<void> {
    try {
      if (w.status === 'booking') w.resolve(await recordIntent(this.pool, w.fence, w.position, w.name, w.key));
      else w.resolve((await recordBooked(this.pool, w.fence, w.position, w.name, w.key, w.reference!)) ? w.fence.bundleId : null);
    } catch (err) {
      w.reject(err);
    }
  }
}
