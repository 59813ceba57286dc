/**
 * Finishing bundles with group commit: agents that finish at about the same time are written in
 * one autocommitted statement (still fenced per row on attempt), with their events. While
 * a flush is in flight, new finishes queue up and go in the next one, so under load the number
 * of transactions per bundle falls well below one, and when idle a finish is written at once.
 */
import type pg from 'pg';
import type { Queryable } from '../db/pool.js';
import { eventJobsCte, type EventName } from '../bundles/events.js';
import { bundleKind } from '../bundles/kinds.js';
import { GroupCommit } from './group-commit.js';
import { withAgentTimeouts } from './fenced-writes.js';
import { statement } from '../db/statements.js';
import { CALL_HORIZON_MARGIN } from '../bundles/call-horizon.js';

export interface FinishRequest {
  bundleId: string;
  attempt: number;
  kind: string;
  actor: string;
  outcome: 'completed' | 'compensated';
  /**
   * For `compensated`: seconds until the bundle's reconciliation pass (agents/reconcile.ts) — long
   * enough for every call that could still be in flight to have run out.
   */
  reconcileAfterSeconds?: number;
  /** The last step's outcome, written with the finish when the step keeps a row. */
  lastStep?: { position: number; name: string; key: string; reference: string };
  /** The finishing attempt's trace context, for the event's header (a batch mixes several bundles' attempts). */
  traceparent?: string | null;
}

const finishSqlTemplate = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::text[])
    AS t(id, attempt, actor, outcome, position, step, key, reference, reconcile_after, event_name, traceparent)
), lockable AS (
  -- SKIP LOCKED: a row another session holds must not stall the batch-mates; it comes back busy.
  SELECT b.id, b.attempt FROM bundles b JOIN input i ON b.id = i.id
  WHERE b.attempt = i.attempt AND b.state = 'running' AND b.phase = CASE i.outcome WHEN 'completed' THEN 'book' ELSE 'undo' END
  FOR NO KEY UPDATE OF b%SKIP%
), done AS (
  UPDATE bundles b
  SET state = i.outcome, locked_by = NULL, locked_until = NULL, updated_at = now(), finished_at = now(),
      -- Not before any attempt's calls have run out (sql/009_call_horizon.sql), whatever this worker's settings.
      reconcile_at = CASE WHEN i.outcome = 'compensated' THEN greatest(now() + make_interval(secs => coalesce(i.reconcile_after, 0)), b.calls_until + ${CALL_HORIZON_MARGIN}) END,
      reconcile_attempts = 0, reconcile_failures = 0
  FROM input i JOIN lockable l ON l.id = i.id AND l.attempt = i.attempt
  WHERE b.id = i.id
  RETURNING b.id, b.booking_id, b.kind, i.attempt, i.actor, i.outcome, i.position, i.step, i.key, i.reference, i.event_name, i.traceparent
), step AS (
  INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, attempt)
  SELECT id, position, step, 'booked', key, reference, attempt FROM done WHERE key IS NOT NULL
  ON CONFLICT (bundle_id, position) DO UPDATE SET status = 'booked', reference = EXCLUDED.reference, error = NULL, updated_at = now()
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
  SELECT id, actor, attempt, 'running', outcome, step,
         CASE outcome WHEN 'completed' THEN 'all steps booked' ELSE 'all booked steps cancelled' END FROM done
)%EVENTS%
SELECT id, attempt, false AS busy FROM done
UNION ALL
SELECT i.id, i.attempt, true FROM input i
JOIN bundles b ON b.id = i.id AND b.attempt = i.attempt AND b.state = 'running' AND b.phase = CASE i.outcome WHEN 'completed' THEN 'book' ELSE 'undo' END
-- NOT IN over the CTE is a hashed subplan; NOT EXISTS was planned as a nested loop over it
-- (the CTE's row estimate is tiny), growing with the square of the batch: measured 51 ms of a
-- 69 ms 1,000-row finish (bench/experiments/where-noop.ts).
WHERE (i.id, i.attempt) NOT IN (SELECT d.id, d.attempt FROM done d)`;

const eventCtes = `, ${eventJobsCte(`SELECT event_name, id AS correlation_id, jsonb_build_object('vip_bundle_id', id, 'booking_id', booking_id, 'outcome', outcome) AS data, traceparent FROM done`)}`;

/**
 * The finish's four texts: skipping locked rows (the group) or waiting for them (one busy row
 * alone), with its events or without. A batch without events (a no-op kind) leaves the event CTEs
 * out: a large batch is unnamed (db/statements.ts) and planned each time, and planning them cost
 * the server about 4 % more CPU per no-op bundle (bench/experiments/where-noop.ts).
 */
const finishSql = (wait: boolean, events: boolean) => ({
  name: `bundlefleet_finish${wait ? '_waiting' : ''}${events ? '_events' : ''}`,
  text: finishSqlTemplate.replace('%SKIP%', wait ? '' : ' SKIP LOCKED').replace('%EVENTS%', events ? eventCtes : ''),
});
const finishTexts = [finishSql(false, false), finishSql(false, true), finishSql(true, false), finishSql(true, true)];

/** A finish is matched by bundle and attempt: a stale attempt sharing a batch with the current one is never told it finished. */
export const finishKey = (id: string, attempt: number) => `${id}:${attempt}`;

export interface FinishResult {
  /** finishKey of each bundle finished. */
  finished: Set<string>;
  /** finishKey of each bundle still owned by that attempt whose row another session holds: not finished. */
  busy: Set<string>;
}

export async function finishBundles(db: Queryable, items: FinishRequest[], opts: { wait?: boolean } = {}): Promise<FinishResult> {
  const events = items.map(eventOf);
  const sql = finishTexts[(opts.wait ? 2 : 0) + (events.some((e) => e !== null) ? 1 : 0)]!;
  const { rows: all } = await db.query<{ id: string; attempt: number; busy: boolean }>(statement(db, sql.name, sql.text, [
    items.map((i) => i.bundleId),
    items.map((i) => i.attempt),
    items.map((i) => i.actor),
    items.map((i) => i.outcome),
    items.map((i) => i.lastStep?.position ?? null),
    items.map((i) => i.lastStep?.name ?? null),
    items.map((i) => i.lastStep?.key ?? null),
    items.map((i) => i.lastStep?.reference ?? null),
    items.map((i) => i.reconcileAfterSeconds ?? null),
    events,
    items.map((i) => i.traceparent ?? null),
  ], items.length));
  const rows = all.filter((r) => !r.busy);
  return { finished: new Set(rows.map((r) => finishKey(r.id, r.attempt))), busy: new Set(all.filter((r) => r.busy).map((r) => finishKey(r.id, r.attempt))) };
}

const BUSY = Symbol('busy');

export class Finisher {
  private readonly group: GroupCommit<FinishRequest, boolean | typeof BUSY>;

  constructor(private readonly pool: pg.Pool, maxBatch = 1000) {
    this.group = new GroupCommit({
      maxBatch,
      write: async (batch) => {
        const { finished, busy } = await finishBundles(pool, batch);
        return batch.map((b) => {
          const key = finishKey(b.bundleId, b.attempt);
          return busy.has(key) ? BUSY : finished.has(key);
        });
      },
    });
  }

  /** Resolves true when finished, false when a newer attempt owns the bundle (fenced out). */
  async finish(req: FinishRequest): Promise<boolean> {
    const result = await this.group.submit(req);
    if (result !== BUSY) return result;
    // Its row is locked by another session: finish it alone, waiting (bounded) outside the group.
    const { finished } = await withAgentTimeouts(this.pool, (client) => finishBundles(client, [req], { wait: true }));
    return finished.has(finishKey(req.bundleId, req.attempt));
  }
}

/** The event a finish publishes, if its kind has one: VipBundleFinalized_v1 or VipBundleFailed_v1 for vip. */
function eventOf(req: FinishRequest): EventName | null {
  const { events } = bundleKind(req.kind);
  return (req.outcome === 'completed' ? events.finalized : events.failed) ?? null;
}
