import type { Queryable } from '../db/pool.js';

/**
 * How long an undone bundle's reconciliation pass (agents/reconcile.ts) keeps trying, shared by
 * the pass and the supervisor's alerts. After MAX_RECONCILE_FAILURES passes in a row that could
 * not reach every provider, the supervisor raises an `unreconciled` alert (supervisor/alerts.ts)
 * and the passes go on every RECONCILE_RETRY_SECONDS instead of every lease: a late booking may
 * still be live at a provider that does not answer now, and nothing else would ever cancel it
 * (invariant 8). A pass only asks and cancels by key, so going on costs a lookup per step an
 * hour. The alert resolves itself when a pass completes.
 */
export const MAX_RECONCILE_FAILURES = 10;
export const RECONCILE_RETRY_SECONDS = 3600;

/**
 * The `unreconciled` alert's condition, for raising and resolving it alike. It leads with
 * `reconcile_at IS NOT NULL`, the literal condition of bundles_reconcile_idx. $n: MAX_RECONCILE_FAILURES.
 */
export const unreconciledSql = (b: string, n: string) =>
  `${b}.reconcile_at IS NOT NULL AND ${b}.state IN ('compensated', 'dead') AND ${b}.reconcile_failures >= ${n}`;

/**
 * An operator ends an undone bundle's reconciliation passes, having checked the providers by hand:
 * for a provider that refuses the lookups for good (an expired key, a revoked credential), the
 * passes would otherwise go on hourly with the `unreconciled` alert open. One conditional UPDATE
 * with its history row; a pass still running finds its mark gone and records nothing. Returns
 * false when no pass was due (nothing changed).
 */
export async function endReconciliation(db: Queryable, bundleId: string, actor: string): Promise<boolean> {
  const { rows } = await db.query(
    `WITH ended AS (
       UPDATE bundles SET reconcile_at = NULL, reconcile_failures = 0
       WHERE id = $1 AND state IN ('compensated', 'dead') AND reconcile_at IS NOT NULL
       RETURNING id, attempt, state
     )
     INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
     SELECT id, $2, attempt, state, state, 'reconciliation ended by an operator (providers checked by hand)' FROM ended
     RETURNING bundle_id`,
    [bundleId, actor],
  );
  return rows.length > 0;
}
