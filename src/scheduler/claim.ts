/**
 * The claim: one short statement. It picks due pending/compensating rows with FOR UPDATE SKIP
 * LOCKED (so concurrent schedulers never see the same row), takes a transaction-scoped advisory
 * lock per bundle, moves them to `running` with a new attempt and a lease, and writes their
 * history — and then the transaction ends. No transaction is ever held across a provider call.
 */
import type { Queryable } from '../db/pool.js';
import { workerLockHeldElsewhere } from '../bundles/worker-locks.js';
import { carriedKindVersions } from '../bundles/kinds.js';
import { statement } from '../db/statements.js';

export interface ClaimedBundle {
  id: string;
  booking_id: string;
  kind: string;
  kind_version: number;
  phase: 'book' | 'undo';
  payload: Record<string, unknown>;
  attempt: number;
  failure_count: number;
  from_state: 'pending' | 'compensating';
  /** W3C traceparent of the bundle's root span (tracing.ts), null when it was enqueued without tracing. */
  trace_context: string | null;
}

export interface ClaimOptions {
  workerId: string;
  limit: number;
  leaseSeconds: number;
  /** Kind versions this worker carries; a bundle of another version is left for a worker that does. Default: this build's. */
  kinds?: Array<{ kind: string; version: number }>;
}

function kindParams(opts: ClaimOptions): [string[], number[]] {
  const kinds = opts.kinds ?? carriedKindVersions();
  return [kinds.map((k) => k.kind), kinds.map((k) => k.version)];
}

// The advisory lock names due.id, not b.id: a condition on `due` alone is applied to the (at
// most $1) due rows, whatever join the planner picks. Written on b.id it was a filter on
// `bundles` itself, and with a hash join over a sequential scan it took a lock on every row of
// the table (measured: 20,000 locks and 60 ms for a 500-row claim on a 20,000-row table),
// and a concurrent claim then found every bundle locked.
// The WHERE of `due` repeats the partial index condition of bundles_claim_idx literally
// (state IN ('pending', 'compensating')) so the planner can use that index.
const claimSql = `
WITH due AS (
  SELECT id, state
  FROM bundles
  WHERE state IN ('pending', 'compensating') AND next_run_at <= now()
    -- Claim only while the claimer holds its liveness lock (one InitPlan per statement): a worker
    -- whose lock went with a dead connection must not take bundles the supervisor would reset at once.
    AND ${workerLockHeldElsewhere('$2')}
    AND (kind, kind_version) IN (SELECT * FROM unnest($4::text[], $5::int[]))
  ORDER BY next_run_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE bundles b
  SET state = 'running',
      phase = CASE WHEN due.state = 'compensating' THEN 'undo' ELSE b.phase END,
      attempt = b.attempt + 1,
      locked_by = $2,
      locked_until = now() + make_interval(secs => $3),
      -- sql/009_call_horizon.sql: reconciliation of an undone bundle waits for this.
      calls_until = greatest(b.calls_until, now() + make_interval(secs => $3)),
      updated_at = now()
  FROM due
  WHERE b.id = due.id
    AND pg_try_advisory_xact_lock(hashtextextended('bundlefleet.bundle.' || due.id::text, 0))
  RETURNING b.id, b.booking_id, b.kind, b.kind_version, b.phase, b.payload, b.attempt, b.failure_count, due.state AS from_state, b.trace_context
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
  SELECT id, $2, attempt, from_state, 'running', CASE WHEN phase = 'undo' THEN 'claimed to undo' ELSE 'claimed' END FROM claimed
)
SELECT * FROM claimed`;

export async function claimBundles(db: Queryable, opts: ClaimOptions): Promise<ClaimedBundle[]> {
  if (opts.limit <= 0) return [];
  const { rows } = await db.query<ClaimedBundle>(statement(db, 'bundlefleet_claim', claimSql, [opts.limit, opts.workerId, opts.leaseSeconds, ...kindParams(opts)], opts.limit));
  return rows;
}

export interface ClaimedReconciliation {
  id: string;
  booking_id: string;
  kind: string;
  kind_version: number;
  state: 'compensated' | 'dead';
  reconcile_attempts: number;
  /** Passes in a row that ended without reaching every provider (the pass counts them when it ends). */
  reconcile_failures: number;
  /** The reconcile_at this claim wrote (as text, to keep its microseconds): the pass's own mark, checked when it finishes. */
  claimed_until: string;
  trace_context: string | null;
}

/**
 * Claims undone bundles whose reconciliation pass is due (agents/reconcile.ts). The claim moves
 * reconcile_at `leaseSeconds` ahead, which is the pass's lease: another worker takes the bundle
 * only after that. Like a bundle claim, it succeeds only while the claimer holds its liveness lock.
 * The WHERE repeats the partial index condition of bundles_reconcile_idx (reconcile_at IS NOT NULL).
 */
export async function claimReconciliations(db: Queryable, opts: ClaimOptions): Promise<ClaimedReconciliation[]> {
  if (opts.limit <= 0) return [];
  const { rows } = await db.query<ClaimedReconciliation>(
    `UPDATE bundles b SET reconcile_at = now() + make_interval(secs => $3), reconcile_attempts = b.reconcile_attempts + 1
     WHERE b.id IN (
       SELECT id FROM bundles
       WHERE reconcile_at IS NOT NULL AND reconcile_at <= now() AND state IN ('compensated', 'dead')
         AND ${workerLockHeldElsewhere('$2')}
         AND (kind, kind_version) IN (SELECT * FROM unnest($4::text[], $5::int[]))
       ORDER BY reconcile_at LIMIT $1
       FOR UPDATE SKIP LOCKED
     )
     RETURNING b.id, b.booking_id, b.kind, b.kind_version, b.state, b.reconcile_attempts, b.reconcile_failures, b.reconcile_at::text AS claimed_until, b.trace_context`,
    [opts.limit, opts.workerId, opts.leaseSeconds, ...kindParams(opts)],
  );
  return rows;
}
