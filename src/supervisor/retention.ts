import type { Queryable } from '../db/pool.js';

/**
 * Prunes, in small batches so no statement holds many locks: finished bundles (completed,
 * compensated) older than the retention with their steps, history and provider exchanges;
 * history rows and provider exchanges older than the retention; and resolved alerts. Dead bundles
 * stay until an operator retries them, and so does a compensated bundle that holds an active key
 * (its failure not acknowledged): pruning it would free the key without the operator, and one
 * whose reconciliation pass is still due (reconcile_at): pruning it would drop the pass, and a
 * late booking at a provider with it (invariant 8).
 */
export async function pruneBatch(db: Queryable, retentionSeconds: number, batchSize: number): Promise<number> {
  const { rows } = await db.query<{ bundles: string; history: string; exchanges: string; alerts: string }>(
    `WITH old AS (
       SELECT id FROM bundles
       WHERE finished_at < now() - make_interval(secs => $1) AND state IN ('completed', 'compensated')
         AND NOT (state = 'compensated' AND active_key IS NOT NULL AND failure_acked_at IS NULL)
         AND reconcile_at IS NULL
       ORDER BY finished_at LIMIT $2
       FOR UPDATE SKIP LOCKED
     ), gone AS (
       DELETE FROM bundles b USING old WHERE b.id = old.id RETURNING b.id
     ), history AS (
       DELETE FROM bundle_history h
       WHERE h.id IN (
         SELECT id FROM bundle_history WHERE at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2
       ) OR h.bundle_id IN (SELECT id FROM gone)
       RETURNING 1
     ), exchanges AS (
       DELETE FROM provider_exchanges x
       WHERE x.id IN (
         SELECT id FROM provider_exchanges WHERE at < now() - make_interval(secs => $1) LIMIT $2
       ) OR x.bundle_id IN (SELECT id FROM gone)
       RETURNING 1
     ), alerts AS (
       DELETE FROM alerts WHERE id IN (
         SELECT id FROM alerts WHERE resolved_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2
       ) RETURNING 1
     )
     SELECT (SELECT count(*) FROM gone) AS bundles, (SELECT count(*) FROM history) AS history,
            (SELECT count(*) FROM exchanges) AS exchanges, (SELECT count(*) FROM alerts) AS alerts`,
    [retentionSeconds, batchSize],
  );
  const r = rows[0]!;
  return Number(r.bundles) + Number(r.history) + Number(r.exchanges) + Number(r.alerts);
}
