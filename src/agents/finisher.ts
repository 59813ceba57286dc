/**
 * Finishing bundles with group commit: agents that finish at about the same time are written in
 * one transaction and one statement (still fenced per row on attempt), with their events. While
 * a flush is in flight, new finishes queue up and go in the next one, so under load the number
 * of transactions per bundle falls well below one, and when idle a finish is written at once.
 */
import type pg from 'pg';
import { withTransaction, type Queryable } from '../db/pool.js';
import { publishEvents, type PendingEvent } from '../bundles/events.js';
import { bundleKind } from '../bundles/kinds.js';
import { GroupCommit } from './group-commit.js';

export interface FinishRequest {
  bundleId: string;
  attempt: number;
  kind: string;
  actor: string;
  outcome: 'completed' | 'compensated';
  /** The last step's outcome, written with the finish when the step keeps a row. */
  lastStep?: { position: number; name: string; key: string; reference: string };
}

const finishSql = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::text[], $8::text[])
    AS t(id, attempt, actor, outcome, position, step, key, reference)
), done AS (
  UPDATE bundles b
  SET state = i.outcome, locked_by = NULL, locked_until = NULL, updated_at = now(), finished_at = now()
  FROM input i
  WHERE b.id = i.id AND b.attempt = i.attempt AND b.state = 'running'
    AND b.phase = CASE i.outcome WHEN 'completed' THEN 'book' ELSE 'undo' END
  RETURNING b.id, b.booking_id, b.kind, i.attempt, i.actor, i.outcome, i.position, i.step, i.key, i.reference
), step AS (
  INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, attempt)
  SELECT id, position, step, 'booked', key, reference, attempt FROM done WHERE key IS NOT NULL
  ON CONFLICT (bundle_id, position) DO UPDATE SET status = 'booked', reference = EXCLUDED.reference, error = NULL, updated_at = now()
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
  SELECT id, actor, attempt, 'running', outcome, step,
         CASE outcome WHEN 'completed' THEN 'all steps booked' ELSE 'all booked steps cancelled' END FROM done
)
SELECT id, booking_id, kind, outcome FROM done`;

export async function finishBundles(db: Queryable, items: FinishRequest[]): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string; booking_id: string; kind: string; outcome: FinishRequest['outcome'] }>(finishSql, [
    items.map((i) => i.bundleId),
    items.map((i) => i.attempt),
    items.map((i) => i.actor),
    items.map((i) => i.outcome),
    items.map((i) => i.lastStep?.position ?? null),
    items.map((i) => i.lastStep?.name ?? null),
    items.map((i) => i.lastStep?.key ?? null),
    items.map((i) => i.lastStep?.reference ?? null),
  ]);
  const events: PendingEvent[] = [];
  for (const r of rows) {
    const kind = bundleKind(r.kind);
    const name = r.outcome === 'completed' ? kind.events.finalized : kind.events.failed;
    if (name) events.push({ name, correlationId: r.id, data: { vip_bundle_id: r.id, booking_id: r.booking_id, outcome: r.outcome } });
  }
  await publishEvents(db, events);
  return new Set(rows.map((r) => r.id));
}

export class Finisher {
  private readonly group: GroupCommit<FinishRequest, boolean>;

  constructor(pool: pg.Pool, maxBatch = 1000) {
    this.group = new GroupCommit({
      maxBatch,
      write: async (batch) => {
        // Events need the transaction; a batch without any is one autocommitted statement.
        const finished = batch.some(hasEvent)
          ? await withTransaction(pool, (client) => finishBundles(client, batch))
          : await finishBundles(pool, batch);
        return batch.map((b) => finished.has(b.bundleId));
      },
    });
  }

  /** Resolves true when finished, false when a newer attempt owns the bundle (fenced out). */
  finish(req: FinishRequest): Promise<boolean> {
    return this.group.submit(req);
  }
}

function hasEvent(req: FinishRequest): boolean {
  const { events } = bundleKind(req.kind);
  return Boolean(req.outcome === 'completed' ? events.finalized : events.failed);
}
