/**
 * Active keys: at most one active process per business key (seed 003: one voiding process per
 * document; acknowledging a failure allows a new one). The rule lives in the database, in the
 * partial unique index `bundles_active_key_idx` (sql/003_active_keys.sql): a bundle holds its key
 * while it is not finished, and after it failed (compensated or dead) until an operator
 * acknowledges the failure. Enqueue inserts and lets the index refuse; this module names the
 * holder for the refusal, and acknowledges failures.
 *
 * Not the same thing as an idempotency key: an idempotency key names one request (the same
 * request again gets the same answer), an active key names a business object (a second, different
 * request about it is refused while the first is in progress or failed unacknowledged).
 */
import type { Queryable } from '../db/pool.js';
import { Conflict, NotFound } from '../errors.js';
import { parseBundleId } from './input.js';

/** Whether a bundle row holds its active key: the index's predicate, written the same way so the planner can use the index. */
export const HOLDS_ACTIVE_KEY = `active_key IS NOT NULL
    AND (state NOT IN ('completed', 'compensated', 'dead') OR (state IN ('compensated', 'dead') AND failure_acked_at IS NULL))`;

export interface KeyHolder {
  active_key: string;
  vip_bundle_id: string;
  state: string;
}

/** The bundles holding these keys now (a key may have been freed since an insert was refused). */
export async function findKeyHolders(db: Queryable, keys: string[]): Promise<Map<string, KeyHolder>> {
  const { rows } = await db.query<KeyHolder>(
    `SELECT active_key, id AS vip_bundle_id, state FROM bundles WHERE active_key = ANY($1::text[]) AND ${HOLDS_ACTIVE_KEY}`,
    [keys],
  );
  return new Map(rows.map((r) => [r.active_key, r]));
}

function describeHolder(h: KeyHolder & { inThisInput: boolean }): string {
  const key = JSON.stringify(h.active_key);
  if (h.inThisInput) return `active_key ${key}: given to more than one bundle of this input; an active key allows one bundle at a time`;
  if (h.state === 'compensated' || h.state === 'dead') {
    return `active_key ${key} is held by bundle ${h.vip_bundle_id}, which ended ${h.state} and whose failure is not acknowledged yet: acknowledge it (bundlefleet ack ${h.vip_bundle_id}) to free the key`;
  }
  return `active_key ${key} is held by bundle ${h.vip_bundle_id} (${h.state}): the key is freed when that bundle completes, or when an operator acknowledges its failure`;
}

/** An enqueue refused because an active key is held by another bundle (CLI exit 1, HTTP 409). Nothing of its batch was written. */
export class ActiveKeyTaken extends Conflict {
  /** The bundles of earlier batches of the same call, committed before this batch was refused. */
  enqueuedBefore: Array<{ vip_bundle_id: string; booking_id: string; created: boolean }> = [];

  /** `inThisInput`: the holder is a bundle of the same batch (refused with it); two new bundles with one key are refused before any write (enqueue-checks.ts). */
  constructor(readonly holders: Array<KeyHolder & { inThisInput: boolean }>) {
    super(holders.map(describeHolder).join('; '));
    this.name = 'ActiveKeyTaken';
  }
}

export interface AckResult {
  vip_bundle_id: string;
  booking_id: string;
  state: string;
  active_key: string | null;
  failure_acked_at: string;
}

/**
 * An operator acknowledges a bundle's failure: a compensated or dead bundle stops holding its
 * active key (if it has one), so a new bundle with that key may be enqueued. One conditional
 * UPDATE with its history row; acknowledging again changes nothing and answers the same.
 */
export async function ackBundle(db: Queryable, rawId: string, actor = 'operator'): Promise<AckResult> {
  const id = parseBundleId(rawId);
  const { rows } = await db.query<AckResult & { failure_acked_at: Date }>(
    `WITH target AS (
       SELECT id, failure_acked_at IS NOT NULL AS already FROM bundles
       WHERE (id = $1 OR booking_id = $1) AND state IN ('compensated', 'dead') FOR UPDATE
     ), updated AS (
       UPDATE bundles b SET failure_acked_at = coalesce(b.failure_acked_at, now()), updated_at = CASE WHEN t.already THEN b.updated_at ELSE now() END
       FROM target t WHERE b.id = t.id AND b.state IN ('compensated', 'dead')
       RETURNING b.id, b.booking_id, b.attempt, b.state, b.active_key, b.failure_acked_at, t.already
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $2, attempt, state, state, CASE WHEN active_key IS NULL THEN 'failure acknowledged' ELSE 'failure acknowledged; active key freed' END
       FROM updated WHERE NOT already
     ), alerts AS (
       -- The failure is acknowledged, and so are the alerts it raised.
       UPDATE alerts SET acked_at = now() FROM updated WHERE alerts.bundle_id = updated.id AND alerts.resolved_at IS NULL AND alerts.acked_at IS NULL
     )
     SELECT id AS vip_bundle_id, booking_id, state, active_key, failure_acked_at FROM updated`,
    [id, actor],
  );
  const r = rows[0];
  if (r) return { ...r, failure_acked_at: r.failure_acked_at.toISOString() };
  const { rows: found } = await db.query<{ state: string }>('SELECT state FROM bundles WHERE id = $1 OR booking_id = $1', [id]);
  if (!found[0]) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
  const state = found[0].state;
  throw new Conflict(
    state === 'completed'
      ? `cannot acknowledge bundle ${id}: it completed, so there is no failure to acknowledge (a completed bundle frees its active key by itself)`
      : `cannot acknowledge bundle ${id}: it is ${state}, not finished; only compensated or dead bundles have a failure to acknowledge (cancel it first if it must stop)`,
  );
}
