/**
 * The supervisor's decisions, each one conditional UPDATE over a small batch picked with
 * FOR UPDATE SKIP LOCKED — never read-then-write — so a supervisor and an agent (or two
 * supervisors) racing on one bundle cannot both win: the loser's WHERE no longer matches.
 *
 * Where a bundle goes next:
 *   booking (phase book):  failure_count + 1 reaches max attempts, or a definitive no → compensating
 *                          otherwise → pending, after exponential backoff with jitter
 *   undoing (phase undo):  undo_failure_count + 1 reaches max undo attempts → dead
 *                          otherwise → compensating, after backoff
 */
import type { Queryable } from '../db/pool.js';
import { DUE_CHANNEL } from '../bundles/enqueue.js';
import { CALL_HORIZON_MARGIN } from '../bundles/call-horizon.js';
import { leaseHeldSql, SUPERVISOR_LEASE } from './lease.js';
import { grantedAdvisoryLocks, lockRowKey, workerLockKey } from '../bundles/worker-locks.js';

export interface DecisionLimits {
  maxAttempts: number;
  maxUndoAttempts: number;
  backoffBaseSeconds: number;
  backoffMaxSeconds: number;
  batchSize: number;
  actor: string;
  /** The supervisor-lease holder this pass runs as: a decision applies only while it holds the lease. */
  leaseHolder?: string;
  /** Seconds after a bundle goes dead until its reconciliation pass (calls still in flight have run out). Default 120. */
  reconcileAfterSeconds?: number;
}

export interface Decided {
  id: string;
  booking_id: string;
  kind: string;
  attempt: number;
  from_state: string;
  to_state: 'pending' | 'compensating' | 'dead';
  /** The bundle's stored trace context: the decision is recorded as a span in its trace. */
  trace_context: string | null;
}

/** Live worker ids are those whose session advisory lock is held in this database (see scheduler/liveness.ts). */
const liveWorkersCte = `live AS MATERIALIZED (
  SELECT ${lockRowKey('l')} AS key FROM ${grantedAdvisoryLocks('l')}
)`;

const ownerGone = `NOT EXISTS (SELECT 1 FROM live WHERE live.key = ${workerLockKey('b.locked_by')})`;

type Selection = 'orphans' | 'expired' | 'failed';

const selections: Record<Selection, { where: string; reason: string; isReset: boolean; backoff: boolean }> = {
  // The worker holding the lease is gone: back now, no waiting for the lease.
  orphans: { where: `b.state = 'running' AND ${ownerGone}`, reason: 'owner gone: reset', isReset: true, backoff: false },
  // The worker lives but its lease ran out (stuck agent): back after backoff; the old attempt is fenced out.
  expired: { where: `b.state = 'running' AND b.locked_until < now()`, reason: 'lease expired: reset', isReset: true, backoff: true },
  failed: { where: `b.state = 'failed'`, reason: 'failure handled', isReset: false, backoff: true },
};

function decisionSql(selection: Selection): string {
  const s = selections[selection];
  return `
WITH ${liveWorkersCte},
candidates AS (
  SELECT b.id FROM bundles b
  WHERE ${s.where}
    -- A pass that lost its lease (it froze, another took over) decides nothing more.
    AND ($8::text IS NULL OR ${leaseHeldSql(`'${SUPERVISOR_LEASE}'`, '$8::text')})
  ORDER BY b.updated_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), decided AS (
  SELECT b.id, b.state AS from_state,
    CASE WHEN b.phase = 'book' THEN
           CASE WHEN (b.state = 'failed' AND b.last_error_class = 'permanent') OR b.failure_count + 1 >= $2 THEN 'compensating' ELSE 'pending' END
         ELSE
           CASE WHEN b.undo_failure_count + 1 >= $3 THEN 'dead' ELSE 'compensating' END
    END AS to_state,
    CASE WHEN b.phase = 'book' THEN b.failure_count + 1 ELSE b.undo_failure_count + 1 END AS failures
  FROM bundles b JOIN candidates c ON c.id = b.id
), updated AS (
  UPDATE bundles b SET
    state = d.to_state,
    failure_count = b.failure_count + (b.phase = 'book')::int,
    undo_failure_count = b.undo_failure_count + (b.phase = 'undo')::int,
    reset_count = b.reset_count + ${s.isReset ? 1 : 0},
    locked_by = NULL,
    locked_until = NULL,
    next_run_at = CASE
      WHEN ${s.backoff} AND NOT (b.phase = 'book' AND d.to_state = 'compensating') AND d.to_state <> 'dead'
        THEN now() + make_interval(secs => least($5::float8, $4::float8 * power(2, least(d.failures - 1, 30))) * (0.5 + random() * 0.5))
      -- No backoff: due at once, keeping its place in the queue (its old due time) so that under a
      -- backlog an orphan or a compensation is claimed next, not after every bundle enqueued since.
      -- One millisecond earlier puts it ahead of the bundles enqueued in the same batch (same due
      -- time, and a re-written row sorts last among equals in the index): measured in the chaos
      -- run, recovery under a 600-bundle backlog went from max 20.7 s to about 1 s.
      ELSE least(b.next_run_at, now()) - interval '1 millisecond' END,
    finished_at = CASE WHEN d.to_state = 'dead' THEN now() ELSE NULL END,
    -- Not before any attempt's calls have run out (sql/009_call_horizon.sql): a worker's lease may be far above $9.
    reconcile_at = CASE WHEN d.to_state = 'dead' THEN greatest(now() + make_interval(secs => $9::float8), b.calls_until + ${CALL_HORIZON_MARGIN}) ELSE b.reconcile_at END,
    reconcile_attempts = CASE WHEN d.to_state = 'dead' THEN 0 ELSE b.reconcile_attempts END,
    reconcile_failures = CASE WHEN d.to_state = 'dead' THEN 0 ELSE b.reconcile_failures END,
    updated_at = now()
  FROM decided d
  WHERE b.id = d.id AND ${s.where.replace(ownerGone, 'true')}
  RETURNING b.id, b.booking_id, b.kind, b.attempt, d.from_state, d.to_state, b.last_error, b.trace_context
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason, error)
  SELECT id, $6, attempt, from_state, to_state, $7 || ' → ' || to_state, CASE WHEN from_state = 'failed' THEN last_error END FROM updated
)
SELECT id, booking_id, kind, attempt, from_state, to_state, trace_context,
       CASE WHEN to_state <> 'dead' THEN pg_notify('${DUE_CHANNEL}', '') END AS notified
FROM updated`;
}

const sqlBySelection = Object.fromEntries((Object.keys(selections) as Selection[]).map((k) => [k, decisionSql(k)])) as Record<Selection, string>;

/** Applies one batch of one decision; returns the bundles it moved. */
export async function decideBatch(db: Queryable, selection: Selection, limits: DecisionLimits): Promise<Decided[]> {
  const { rows } = await db.query<Decided>(sqlBySelection[selection], [
    limits.batchSize,
    limits.maxAttempts,
    limits.maxUndoAttempts,
    limits.backoffBaseSeconds,
    limits.backoffMaxSeconds,
    limits.actor,
    selections[selection].reason,
    limits.leaseHolder ?? null,
    limits.reconcileAfterSeconds ?? 120,
  ]);
  return rows;
}

export type { Selection };

/**
 * Whether any running bundle's owner is gone: a read, no lock taken. The orphan watch asks it
 * every few hundred milliseconds between passes, and takes the lease only when it says yes.
 */
export async function anyOrphans(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ any: boolean }>(`WITH ${liveWorkersCte}
SELECT EXISTS (SELECT 1 FROM bundles b WHERE ${selections.orphans.where}) AS any`);
  return rows[0]!.any;
}

/**
 * Waits past their deadline → compensating: the confirmations a `waiting` bundle needed did not
 * all arrive in time, so what it booked is undone. Conditional on the bundle still waiting (a
 * signal that wins the race wakes it instead) and on the pass's lease, like every decision.
 */
const waitTimeoutSql = `
WITH candidates AS (
  SELECT id FROM bundles
  WHERE state = 'waiting' AND wait_deadline < now()
    AND ($3::text IS NULL OR ${leaseHeldSql(`'${SUPERVISOR_LEASE}'`, '$3::text')})
  ORDER BY wait_deadline
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), missing AS (
  SELECT b.id, array_to_string(ARRAY(
    SELECT w.name FROM unnest(b.waiting_for) AS w(name)
    WHERE w.name NOT IN (SELECT s.name FROM bundle_signals s WHERE s.bundle_id = b.id)), ', ') AS names
  FROM bundles b JOIN candidates c ON c.id = b.id
), updated AS (
  UPDATE bundles b SET state = 'compensating', waiting_for = NULL, wait_deadline = NULL, next_run_at = now(), updated_at = now(),
    last_error = 'timed out waiting for ' || m.names, last_error_class = 'permanent', last_error_step = NULL
  FROM missing m
  WHERE b.id = m.id AND b.state = 'waiting'
  RETURNING b.id, b.booking_id, b.kind, b.attempt, b.last_error, b.trace_context
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason, error)
  SELECT id, $2, attempt, 'waiting', 'compensating', 'wait timed out → compensating', last_error FROM updated
)
SELECT id, booking_id, kind, attempt, 'waiting' AS from_state, 'compensating' AS to_state, trace_context, pg_notify('${DUE_CHANNEL}', '') AS notified
FROM updated`;

/** Applies one batch of wait timeouts; returns the bundles it moved to compensating. */
export async function timeOutWaits(db: Queryable, limits: DecisionLimits): Promise<Decided[]> {
  const { rows } = await db.query<Decided>(waitTimeoutSql, [limits.batchSize, limits.actor, limits.leaseHolder ?? null]);
  return rows;
}
