/**
 * What an operator can do to bundles. Each action is one conditional UPDATE: it applies to the
 * bundles whose current state allows it and changes nothing for the others. The single-bundle
 * functions say why nothing changed; the bulk ones (`retryBundles`, `cancelBundles`) run the
 * same statement over a list of ids picked by `findBundles` and skip the bundles that moved on
 * in between.
 */
import type { Queryable } from '../db/pool.js';
import { Conflict, NotFound } from '../errors.js';
import { DUE_CHANNEL } from '../bundles/enqueue.js';
import { parseBundleId } from '../bundles/input.js';
import { HOLDS_ACTIVE_KEY } from '../bundles/active-keys.js';

export interface OperatorResult {
  vip_bundle_id: string;
  booking_id: string;
  from_state: string;
  state: string;
}

/**
 * Runs a single-bundle action; when it changed nothing, says why. `target` locks the row FOR UPDATE,
 * which re-reads it if a concurrent transaction (a claim) changed it meanwhile and re-checks the
 * allowed states; the UPDATE then applies to that locked row. (It used to compare the state it had
 * read at statement start again, and so lost a race with a claim: "it is running; only pending,
 * running or failed bundles can be cancelled".)
 */
async function applyOne(db: Queryable, sql: string, id: string, actor: string, action: 'retry' | 'cancel', allowed: readonly string[]): Promise<OperatorResult> {
  const { rows } = await db.query<OperatorResult>(sql, [[id], actor]);
  if (rows[0]) return rows[0];
  const { rows: now } = await db.query<{ state: string; phase: string; active_key: string | null; key_holder: string | null }>(
    `SELECT x.state, x.phase, x.active_key,
            CASE WHEN x.failure_acked_at IS NOT NULL
                 THEN (SELECT o.id FROM bundles o WHERE o.active_key = x.active_key AND o.id <> x.id AND ${HOLDS_ACTIVE_KEY}) END AS key_holder
     FROM bundles x WHERE x.id = $1 OR x.booking_id = $1`,
    [id],
  );
  const b = now[0];
  if (!b) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
  if (action === 'retry' && b.key_holder) {
    throw new Conflict(`cannot retry bundle ${id}: its failure was acknowledged and its active key ${JSON.stringify(b.active_key)} is now held by bundle ${b.key_holder}`);
  }
  if (action === 'cancel' && b.state === 'running' && b.phase === 'undo') throw new Conflict(`cannot cancel bundle ${id}: it is already being undone`);
  if (!allowed.includes(b.state)) {
    throw new Conflict(`cannot ${action} bundle ${id}: it is ${b.state}; only ${allowed.join(', ')} bundles can be ${action === 'retry' ? 'retried' : 'cancelled'}`);
  }
  throw new Conflict(`could not ${action} bundle ${id}: it changed while the ${action} ran (now ${b.state}); try again`);
}

// $1 is a uuid[] of vip_bundle_ids or booking_ids. Idle schedulers are woken once per statement
// (the count() makes PostgreSQL evaluate pg_notify without returning it to the caller).
const RESULT = `, notified AS (SELECT count(pg_notify('${DUE_CHANNEL}', '')) FROM updated)
     SELECT u.id AS vip_bundle_id, u.booking_id, u.from_state, u.state FROM updated u, notified`;

export const RETRYABLE_STATES = ['dead', 'failed'] as const;
export const CANCELLABLE_STATES = ['pending', 'running', 'waiting', 'failed'] as const;

/**
 * dead or failed → again, with its counters reset. A bundle that was being undone goes back to
 * `compensating` (its undo is retried; it is never booked again), otherwise to `pending`.
 * A dead bundle holds its active key, and keeps holding it when retried; one whose failure was
 * acknowledged takes its key back (a new failure needs a new acknowledgement), and is skipped
 * when another bundle holds that key now.
 */
const RETRY_SQL = `WITH target AS (
       SELECT id, state FROM bundles x WHERE (id = ANY($1::uuid[]) OR booking_id = ANY($1::uuid[])) AND state IN ('dead', 'failed')
         AND (x.failure_acked_at IS NULL OR x.active_key IS NULL
              OR NOT EXISTS (SELECT 1 FROM bundles o WHERE o.active_key = x.active_key AND o.id <> x.id AND ${HOLDS_ACTIVE_KEY}))
       FOR UPDATE
     ), updated AS (
       UPDATE bundles b SET state = CASE b.phase WHEN 'undo' THEN 'compensating' ELSE 'pending' END, failure_acked_at = NULL,
         failure_count = 0, undo_failure_count = 0, reset_count = 0, next_run_at = now(), finished_at = NULL,
         locked_by = NULL, locked_until = NULL, updated_at = now()
       FROM target t WHERE b.id = t.id
       RETURNING b.id, b.booking_id, b.attempt, t.state AS from_state, b.state
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $2, attempt, from_state, state, 'operator retry' FROM updated
     ), resolved AS (
       UPDATE alerts SET resolved_at = now() FROM updated WHERE alerts.bundle_id = updated.id AND alerts.resolved_at IS NULL
     )${RESULT}`;

/**
 * Any non-terminal bundle → compensating: everything it may have booked is undone. A running
 * agent is fenced out at its next write (the state is no longer `running`).
 */
const CANCEL_SQL = `WITH target AS (
       SELECT id, state FROM bundles
       WHERE (id = ANY($1::uuid[]) OR booking_id = ANY($1::uuid[])) AND state IN ('pending', 'running', 'waiting', 'failed') AND NOT (state = 'running' AND phase = 'undo')
       FOR UPDATE
     ), updated AS (
       UPDATE bundles b SET state = 'compensating', locked_by = NULL, locked_until = NULL, next_run_at = now(), updated_at = now(),
         waiting_for = NULL, wait_deadline = NULL
       FROM target t WHERE b.id = t.id
       RETURNING b.id, b.booking_id, b.attempt, t.state AS from_state, b.state
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $2, attempt, from_state, state, 'operator cancel' FROM updated
     )${RESULT}`;

export async function retryBundle(db: Queryable, rawId: string, actor = 'operator'): Promise<OperatorResult> {
  return applyOne(db, RETRY_SQL, parseBundleId(rawId), actor, 'retry', RETRYABLE_STATES);
}

export async function cancelBundle(db: Queryable, rawId: string, actor = 'operator'): Promise<OperatorResult> {
  return applyOne(db, CANCEL_SQL, parseBundleId(rawId), actor, 'cancel', CANCELLABLE_STATES);
}

/** Which bundles a bulk action is about: one state, optionally changed since a time or created before one. */
export interface BundleFilter {
  state: string;
  /** Last changed at or after this time. */
  since?: Date;
  /** Created before this time. */
  createdBefore?: Date;
}

export async function findBundles(db: Queryable, filter: BundleFilter): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM bundles WHERE state = $1 AND ($2::timestamptz IS NULL OR updated_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3) ORDER BY created_at, id`,
    [filter.state, filter.since ?? null, filter.createdBefore ?? null],
  );
  return rows.map((r) => r.id);
}

const CHUNK = 1000;

/** Runs `sql` over `ids` a chunk at a time (each chunk one statement, so locks stay short). */
async function inChunks(db: Queryable, sql: string, ids: string[], actor: string): Promise<OperatorResult[]> {
  const out: OperatorResult[] = [];
  for (let i = 0; i < ids.length; i += CHUNK) {
    const { rows } = await db.query<OperatorResult>(sql, [ids.slice(i, i + CHUNK), actor]);
    out.push(...rows);
  }
  return out;
}

/** The bulk `retryBundle`: the bundles of `ids` that are still dead or failed are retried; the others are skipped. */
export function retryBundles(db: Queryable, ids: string[], actor = 'operator'): Promise<OperatorResult[]> {
  return inChunks(db, RETRY_SQL, ids, actor);
}

/** The bulk `cancelBundle`: the bundles of `ids` that can still be cancelled are; the others are skipped. */
export function cancelBundles(db: Queryable, ids: string[], actor = 'operator'): Promise<OperatorResult[]> {
  return inChunks(db, CANCEL_SQL, ids, actor);
}
