/**
 * The claim: one short statement. It picks due pending/compensating rows with FOR UPDATE SKIP
 * LOCKED (so concurrent schedulers never see the same row), takes a transaction-scoped advisory
 * lock per bundle, moves them to `running` with a new attempt and a lease, and writes their
 * history — and then the transaction ends. No transaction is ever held across a provider call.
 */
import type { Queryable } from '../db/pool.js';
import { workerLockHeldElsewhere } from '../bundles/worker-locks.js';
import { bundleKind, carriedKindVersions } from '../bundles/kinds.js';
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
  /**
   * The key of the first step's intent when the claim recorded it (a first attempt at booking a
   * kind whose first step calls a provider): the agent calls that provider next without writing it.
   */
  first_intent_key: string | null;
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

/** Per carried kind version (kindParams' order), its first step's name when that step calls a provider. */
function firstIntentParam(opts: ClaimOptions): Array<string | null> {
  return (opts.kinds ?? carriedKindVersions()).map((k) => firstProviderStep(k.kind, k.version));
}

function firstProviderStep(kind: string, version: number): string | null {
  let first;
  try {
    first = bundleKind(kind, version).steps[0];
  } catch {
    return null; // not carried by this build: its bundles are never claimed here anyway
  }
  return first?.provider && !first.wait ? first.name : null;
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
      updated_at = now()
  FROM due
  WHERE b.id = due.id
    AND pg_try_advisory_xact_lock(hashtextextended('bundlefleet.bundle.' || due.id::text, 0))
  RETURNING b.id, b.booking_id, b.kind, b.kind_version, b.phase, b.payload, b.attempt, b.failure_count, due.state AS from_state, b.trace_context
), first_intent AS (
  -- A first attempt at booking records its first step's intent in the claim: the agent calls that
  -- provider next, so this is the fenced write it would send at once (one statement and one commit
  -- per bundle fewer; bench/README.md, "The first intent in the claim"). The key is
  -- stepIdempotencyKey's (kinds.ts). A bundle found with a step row already keeps the agent's path.
  INSERT INTO steps (bundle_id, position, name, status, idempotency_key, attempt)
  SELECT c.id, 0, k.step, 'booking', c.id::text || ':' || k.step, c.attempt
  FROM claimed c JOIN unnest($4::text[], $5::int[], $6::text[]) AS k(kind, version, step) ON k.kind = c.kind AND k.version = c.kind_version
  WHERE c.phase = 'book' AND c.attempt = 1 AND k.step IS NOT NULL
  ON CONFLICT DO NOTHING
  RETURNING bundle_id, name, idempotency_key
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
  SELECT id, $2, attempt, from_state, 'running', NULL, CASE WHEN phase = 'undo' THEN 'claimed to undo' ELSE 'claimed' END FROM claimed
  -- Appended after the claims, so each bundle's intent follows its claim in its timeline.
  UNION ALL
  SELECT bundle_id, $2, 1, 'running', 'running', name, 'booking' FROM first_intent
)
SELECT c.*, f.idempotency_key AS first_intent_key FROM claimed c LEFT JOIN first_intent f ON f.bundle_id = c.id`;

export async function claimBundles(db: Queryable, opts: ClaimOptions): Promise<ClaimedBundle[]> {
  if (opts.limit <= 0) return [];
  const { rows } = await db.query<ClaimedBundle>(statement(db, 'bundlefleet_claim', claimSql, [opts.limit, opts.workerId, opts.leaseSeconds, ...kindParams(opts), firstIntentParam(opts)], opts.limit));
  return rows;
}

export interface ClaimedReconciliation {
  id: string;
  booking_id: string;
  kind: string;
  kind_version: number;
  state: 'compensated' | 'dead';
  reconcile_attempts: number;
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
     RETURNING b.id, b.booking_id, b.kind, b.kind_version, b.state, b.reconcile_attempts, b.reconcile_at::text AS claimed_until, b.trace_context`,
    [opts.limit, opts.workerId, opts.leaseSeconds, ...kindParams(opts)],
  );
  return rows;
}
