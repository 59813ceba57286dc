/**
 * What an operator can do to one bundle. Each is one conditional UPDATE: it either applies to the
 * bundle's current state or changes nothing and says why.
 */
import type { Queryable } from '../db/pool.js';
import { Conflict, NotFound } from '../errors.js';
import { DUE_CHANNEL } from '../bundles/enqueue.js';
import { parseBundleId } from '../bundles/input.js';

export interface OperatorResult {
  vip_bundle_id: string;
  booking_id: string;
  from_state: string;
  state: string;
}

async function explainNoop(db: Queryable, id: string, action: string, allowed: string): Promise<never> {
  const { rows } = await db.query<{ state: string }>('SELECT state FROM bundles WHERE id = $1 OR booking_id = $1', [id]);
  if (!rows[0]) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
  throw new Conflict(`cannot ${action} bundle ${id}: it is ${rows[0].state}; only ${allowed} bundles can be ${action === 'retry' ? 'retried' : 'cancelled'}`);
}

/**
 * dead or failed → again, with its counters reset. A bundle that was being undone goes back to
 * `compensating` (its undo is retried; it is never booked again), otherwise to `pending`.
 */
export async function retryBundle(db: Queryable, rawId: string, actor = 'operator'): Promise<OperatorResult> {
  const id = parseBundleId(rawId);
  const { rows } = await db.query<OperatorResult>(
    `WITH target AS (
       SELECT id, state FROM bundles WHERE (id = $1 OR booking_id = $1) AND state IN ('dead', 'failed') FOR UPDATE
     ), updated AS (
       UPDATE bundles b SET state = CASE b.phase WHEN 'undo' THEN 'compensating' ELSE 'pending' END,
         failure_count = 0, undo_failure_count = 0, reset_count = 0, next_run_at = now(), finished_at = NULL,
         locked_by = NULL, locked_until = NULL, updated_at = now()
       FROM target t WHERE b.id = t.id AND b.state = t.state
       RETURNING b.id, b.booking_id, b.attempt, t.state AS from_state, b.state
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $2, attempt, from_state, state, 'operator retry' FROM updated
     ), resolved AS (
       UPDATE alerts SET resolved_at = now() FROM updated WHERE alerts.bundle_id = updated.id AND alerts.resolved_at IS NULL
     )
     SELECT id AS vip_bundle_id, booking_id, from_state, state, pg_notify('${DUE_CHANNEL}', '') FROM updated`,
    [id, actor],
  );
  return rows[0] ?? explainNoop(db, id, 'retry', 'dead or failed');
}

/**
 * Any non-terminal bundle → compensating: everything it may have booked is undone. A running
 * agent is fenced out at its next write (the state is no longer `running`).
 */
export async function cancelBundle(db: Queryable, rawId: string, actor = 'operator'): Promise<OperatorResult> {
  const id = parseBundleId(rawId);
  const { rows } = await db.query<OperatorResult>(
    `WITH target AS (
       SELECT id, state FROM bundles
       WHERE (id = $1 OR booking_id = $1) AND state IN ('pending', 'running', 'failed') AND NOT (state = 'running' AND phase = 'undo')
       FOR UPDATE
     ), updated AS (
       UPDATE bundles b SET state = 'compensating', locked_by = NULL, locked_until = NULL, next_run_at = now(), updated_at = now()
       FROM target t WHERE b.id = t.id AND b.state = t.state
       RETURNING b.id, b.booking_id, b.attempt, t.state AS from_state, b.state
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $2, attempt, from_state, state, 'operator cancel' FROM updated
     )
     SELECT id AS vip_bundle_id, booking_id, from_state, state, pg_notify('${DUE_CHANNEL}', '') FROM updated`,
    [id, actor],
  );
  return rows[0] ?? explainNoop(db, id, 'cancel', 'pending, running or failed');
}
