/**
 * "Needs attention": the bundles an operator may have to act on, each with one reason.
 *
 * - `stuck`    not finished, and the supervisor raised an unresolved stuck/resets alert for it, or
 *              it is running past its lease (its worker is gone or frozen and no supervisor has
 *              reset it yet);
 * - `dead`     undoing was exhausted: something may still be booked, an operator decides (until
 *              the operator acknowledges the failure with `ack`);
 * - `retrying` not finished and not stuck, but it has failed (book or undo) or had its lease reset
 *              at least once: the fleet is retrying it with backoff. A booking failed by a
 *              definitive no is not retried (the supervisor compensates it): not listed.
 *
 * Unfinished bundles are read through the same literal state list as bundles_unfinished_idx.
 */
import type { Queryable } from '../db/pool.js';

export const ATTENTION_REASONS = ['stuck', 'dead', 'retrying'] as const;
export type AttentionReason = (typeof ATTENTION_REASONS)[number];

export interface AttentionBundle {
  vip_bundle_id: string;
  booking_id: string;
  reason: AttentionReason;
  /** One line on why: the alert's message, the expired lease, the last error or the failure counts. */
  why: string;
  state: string;
  phase: 'book' | 'undo';
  attempt: number;
  failure_count: number;
  undo_failure_count: number;
  reset_count: number;
  next_run_at: string;
  updated_at: string;
  last_error: string | null;
}

export interface AttentionView {
  counts: Record<AttentionReason, number>;
  bundles: AttentionBundle[];
}

/**
 * One statement: the flagged set is computed once (a CTE used twice is materialised) for both the
 * counts and the page of rows. Open alerts are few, so they are hashed once rather than probed
 * per unfinished bundle. Measured with 200k finished, 20k unfinished and 2k dead bundles and 500
 * open alerts: about 40 ms, against 110 ms for a lateral probe per bundle and a second statement
 * for the counts (the status page polls this every 2 s).
 */
const attentionSql = `
WITH open_alerts AS (
  SELECT DISTINCT ON (bundle_id) bundle_id, message FROM alerts
  WHERE resolved_at IS NULL AND kind IN ('stuck', 'resets') ORDER BY bundle_id, id DESC
), flagged AS (
  SELECT b.id, b.booking_id, b.state, b.phase, b.attempt, b.failure_count, b.undo_failure_count, b.reset_count,
         b.next_run_at, b.updated_at, b.last_error,
         CASE WHEN a.message IS NOT NULL OR (b.state = 'running' AND b.locked_until < now()) THEN 'stuck'
              -- A booking's definitive no (sold out) is not retried: the supervisor's next pass
              -- compensates it, and its failure is counted then. Until that pass it is not
              -- "retrying". (An undo that failed is retried whatever the error: it stays listed.)
              WHEN b.state = 'failed' AND b.phase = 'book' AND b.last_error_class = 'permanent' THEN NULL
              WHEN b.state = 'failed' OR b.failure_count > 0 OR b.undo_failure_count > 0 OR b.reset_count > 0 THEN 'retrying'
         END AS reason,
         coalesce(a.message,
                  CASE WHEN b.state = 'running' AND b.locked_until < now()
                       THEN 'running past its lease (held by ' || coalesce(b.locked_by, '?') || ')' END,
                  'failed ' || b.failure_count || ' time(s) booking, ' || b.undo_failure_count || ' undoing; lease reset ' || b.reset_count || ' time(s)') AS why
  FROM bundles b LEFT JOIN open_alerts a ON a.bundle_id = b.id
  WHERE b.state IN ('pending', 'running', 'failed', 'compensating')
  UNION ALL
  SELECT id, booking_id, state, phase, attempt, failure_count, undo_failure_count, reset_count, next_run_at, updated_at, last_error,
         'dead', coalesce(last_error, 'undoing was exhausted')
  FROM bundles WHERE state = 'dead' AND failure_acked_at IS NULL
), page AS (
  SELECT id AS vip_bundle_id, booking_id, reason, why, state, phase, attempt, failure_count, undo_failure_count, reset_count,
         next_run_at, updated_at, last_error
  FROM flagged WHERE reason IS NOT NULL AND ($1::text IS NULL OR reason = $1)
  ORDER BY updated_at DESC, id LIMIT $2
)
SELECT (SELECT coalesce(json_object_agg(reason, n), '{}') FROM (SELECT reason, count(*)::int AS n FROM flagged WHERE reason IS NOT NULL GROUP BY reason) c) AS counts,
       (SELECT coalesce(json_agg(page ORDER BY updated_at DESC, vip_bundle_id), '[]') FROM page) AS bundles`;

/** json_agg writes timestamps as PostgreSQL does; the API gives them as the CLI does (toISOString). */
const iso = (v: string) => new Date(v).toISOString();

/** The newest `limit` bundles needing attention (of one reason, or all), and the count of each reason. */
export async function needsAttention(db: Queryable, opts: { reason?: AttentionReason; limit?: number } = {}): Promise<AttentionView> {
  const { rows } = await db.query<{ counts: Partial<Record<AttentionReason, number>>; bundles: AttentionBundle[] }>(attentionSql, [opts.reason ?? null, opts.limit ?? 25]);
  const counts = Object.fromEntries(ATTENTION_REASONS.map((r) => [r, rows[0]!.counts[r] ?? 0])) as Record<AttentionReason, number>;
  return { counts, bundles: rows[0]!.bundles.map((b) => ({ ...b, next_run_at: iso(b.next_run_at), updated_at: iso(b.updated_at) })) };
}
