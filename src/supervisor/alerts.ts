/**
 * Stuck-process alerts: at most one unresolved alert per (bundle, kind), enforced by the unique
 * partial index alerts_one_unresolved_idx, so however many supervisors raise the same alert only
 * one row exists. Raising publishes BundleStuck_v1 in the same statement's transaction.
 */
import type { Queryable } from '../db/pool.js';
import { NotFound, BadInput } from '../errors.js';
import { MAX_RECONCILE_FAILURES, unreconciledSql } from '../bundles/reconciliation.js';

export type AlertKind = 'stuck' | 'dead' | 'resets' | 'unreconciled';

export interface Alert {
  id: string;
  bundle_id: string;
  kind: AlertKind;
  message: string;
  created_at: string;
  acked_at: string | null;
  resolved_at: string | null;
  delivered_at: string | null;
  delivery_attempts: number;
  last_delivery_error: string | null;
}

const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : (v as string | null));

function toAlert(r: Record<string, unknown>): Alert {
  return {
    id: String(r.id),
    bundle_id: r.bundle_id as string,
    kind: r.kind as AlertKind,
    message: r.message as string,
    created_at: iso(r.created_at)!,
    acked_at: iso(r.acked_at),
    resolved_at: iso(r.resolved_at),
    delivered_at: iso(r.delivered_at),
    delivery_attempts: Number(r.delivery_attempts),
    last_delivery_error: (r.last_delivery_error as string | null) ?? null,
  };
}

/** Open (unresolved, unacknowledged) alerts, or all of them with `all`. Newest first. */
export async function listAlerts(db: Queryable, opts: { all?: boolean; limit?: number } = {}): Promise<Alert[]> {
  const { rows } = await db.query(
    `SELECT * FROM alerts WHERE $1::boolean OR (resolved_at IS NULL AND acked_at IS NULL) ORDER BY id DESC LIMIT $2`,
    [opts.all ?? false, opts.limit ?? 1000],
  );
  return rows.map(toAlert);
}

export function parseAlertId(value: string): string {
  if (!/^\d{1,18}$/.test(value.trim())) throw new BadInput(`alert_id: must be a positive whole number, got ${JSON.stringify(value)}`);
  return value.trim();
}

/** Acknowledges an alert: it stays on record but no longer counts as open (e.g. for --fail-on-alert). */
export async function ackAlert(db: Queryable, rawId: string): Promise<Alert> {
  const id = parseAlertId(rawId);
  const { rows } = await db.query(`UPDATE alerts SET acked_at = coalesce(acked_at, now()) WHERE id = $1 RETURNING *`, [id]);
  if (!rows[0]) throw new NotFound(`no alert with id ${id}`);
  return toAlert(rows[0]);
}

export async function countOpenAlerts(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM alerts WHERE resolved_at IS NULL AND acked_at IS NULL');
  return Number(rows[0]!.n);
}

export interface AlertRules {
  stuckAfterSeconds: number;
  /** A bundle reset more than this many times gets a `resets` alert. */
  maxResets: number;
  batchSize: number;
}

export interface RaisedAlert {
  id: string;
  bundle_id: string;
  kind: AlertKind;
  message: string;
  /** The bundle's stored trace context: raising the alert is a span in its trace. */
  trace_context: string | null;
}

/**
 * Raises the alerts due now — stuck (non-terminal, older than stuck-after, and if parked on a
 * provider window, parked for longer than stuck-after), dead, reset too often, and unreconciled
 * (an undone bundle whose reconciliation pass has not reached every provider in
 * MAX_RECONCILE_FAILURES passes in a row: bundles/reconciliation.ts) —
 * at most one unresolved per (bundle, kind): ON CONFLICT on the partial unique index makes a
 * second supervisor's insert a no-op. Each kind's batch skips bundles that already have that
 * alert open, so more than a batch of them cannot keep the rest from being alerted. Returns only
 * the alerts this call created.
 */
export async function raiseAlerts(db: Queryable, rules: AlertRules): Promise<RaisedAlert[]> {
  const { rows } = await db.query<RaisedAlert>(
    `WITH due AS (
       (SELECT id AS bundle_id, 'stuck' AS kind,
               'bundle not finished after ' || round(extract(epoch FROM now() - created_at)) || ' s (state ' || state || ', attempt ' || attempt || ')' AS message
        FROM bundles
        WHERE state IN ('pending', 'running', 'failed', 'compensating') AND created_at < now() - make_interval(secs => $1)
          -- A bundle only waiting for a provider window (parked) is not stuck until that wait itself passes stuck-after.
          AND NOT coalesce(state IN ('pending', 'compensating') AND parked_until = next_run_at AND parked_since > now() - make_interval(secs => $1), false)
          AND ${notOpen('stuck')}
        ORDER BY created_at LIMIT $3)
       UNION ALL
       (SELECT b.id, 'dead', 'bundle is dead: undo exhausted after ' || b.undo_failure_count || ' failures; last error: ' || coalesce(b.last_error, 'none')
        FROM bundles b
        WHERE b.state = 'dead' AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.bundle_id = b.id AND a.kind = 'dead' AND a.created_at >= b.finished_at)
        LIMIT $3)
       UNION ALL
       (SELECT id, 'resets', 'bundle reset ' || reset_count || ' times'
        FROM bundles
        WHERE state IN ('pending', 'running', 'failed', 'compensating') AND reset_count > $2 AND ${notOpen('resets')}
        LIMIT $3)
       UNION ALL
       (SELECT id, 'unreconciled', 'undone bundle (' || state || ') not reconciled: ' || reconcile_failures
               || ' passes in a row could not reach every provider, which may still hold one of its bookings; passes go on hourly (see its timeline)'
        FROM bundles
        WHERE ${unreconciledSql('bundles', '$4')} AND ${notOpen('unreconciled')}
        ORDER BY reconcile_at LIMIT $3)
     )
     INSERT INTO alerts (bundle_id, kind, message)
     SELECT bundle_id, kind, message FROM due
     ON CONFLICT (bundle_id, kind) WHERE resolved_at IS NULL DO NOTHING
     RETURNING id::text, bundle_id, kind, message, (SELECT b.trace_context FROM bundles b WHERE b.id = alerts.bundle_id) AS trace_context`,
    [rules.stuckAfterSeconds, rules.maxResets, rules.batchSize, MAX_RECONCILE_FAILURES],
  );
  return rows;
}

/** No open alert of `kind` for the row of `bundles` in the query (alerts_one_unresolved_idx answers it). */
const notOpen = (kind: AlertKind) => `NOT EXISTS (SELECT 1 FROM alerts a WHERE a.bundle_id = bundles.id AND a.kind = '${kind}' AND a.resolved_at IS NULL)`;

/** Alerts whose bundle has since finished well (or was retried, or reconciled) resolve themselves. */
export async function resolveAlerts(db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE alerts a SET resolved_at = now()
     FROM bundles b
     WHERE a.bundle_id = b.id AND a.resolved_at IS NULL
       AND ((a.kind IN ('stuck', 'resets') AND b.state IN ('completed', 'compensated', 'dead'))
         OR (a.kind = 'dead' AND b.state <> 'dead')
         -- unreconciled: once its raising condition (raiseAlerts) no longer holds.
         OR (a.kind = 'unreconciled' AND NOT (${unreconciledSql('b', '$1')})))`,
    [MAX_RECONCILE_FAILURES],
  );
  return rowCount ?? 0;
}

/**
 * Claims up to `limit` undelivered alerts that are due for a delivery attempt, oldest first, and
 * moves their next attempt `claimSeconds` ahead so that no other supervisor posts them meanwhile
 * (SKIP LOCKED: a concurrent claimer takes others).
 */
export async function claimAlertsForDelivery(db: Queryable, limit: number, claimSeconds: number): Promise<Alert[]> {
  const { rows } = await db.query(
    `UPDATE alerts a SET next_delivery_at = now() + make_interval(secs => $2)
     WHERE a.id IN (
       SELECT id FROM alerts WHERE delivered_at IS NULL AND next_delivery_at <= now()
       ORDER BY next_delivery_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
     )
     RETURNING a.*`,
    [limit, claimSeconds],
  );
  return rows.map(toAlert).sort((x, y) => Number(x.id) - Number(y.id));
}

/** Records a delivery attempt; a failed one is tried again after a backoff (2 s doubling, at most 5 min). */
export async function recordDelivery(db: Queryable, id: string, error: string | null): Promise<void> {
  await db.query(
    `UPDATE alerts SET delivery_attempts = delivery_attempts + 1,
       delivered_at = CASE WHEN $2::text IS NULL THEN now() END, last_delivery_error = $2,
       next_delivery_at = now() + make_interval(secs => least(300, 2 * power(2, least(delivery_attempts, 10))))
     WHERE id = $1`,
    [id, error],
  );
}
