/**
 * Stuck-process alerts: at most one unresolved alert per (bundle, kind), enforced by the unique
 * partial index alerts_one_unresolved_idx, so however many supervisors raise the same alert only
 * one row exists. Raising publishes BundleStuck_v1 in the same statement's transaction.
 */
import type { Queryable } from '../db/pool.js';
import { NotFound, BadInput } from '../errors.js';

export type AlertKind = 'stuck' | 'dead' | 'resets';

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
