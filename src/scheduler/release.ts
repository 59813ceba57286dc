import type { Queryable } from '../db/pool.js';
import { DUE_CHANNEL } from '../bundles/enqueue.js';

/**
 * Hands bundles back for immediate re-claim (graceful shutdown past the drain timeout), fenced on
 * attempt so a bundle the supervisor already reset is left alone. Returns the ids released.
 */
export async function releaseBundles(db: Queryable, actor: string, bundles: Array<{ id: string; attempt: number }>, reason = 'released at shutdown'): Promise<string[]> {
  if (!bundles.length) return [];
  const { rows } = await db.query<{ id: string }>(
    `WITH input AS (SELECT * FROM unnest($1::uuid[], $2::int[]) AS t(id, attempt)),
     released AS (
       UPDATE bundles b
       SET state = CASE b.phase WHEN 'undo' THEN 'compensating' ELSE 'pending' END,
           locked_by = NULL, locked_until = NULL, next_run_at = now(), updated_at = now()
       FROM input i
       WHERE b.id = i.id AND b.attempt = i.attempt AND b.state = 'running'
       RETURNING b.id, b.attempt, b.state
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, $3, attempt, 'running', state, $4 FROM released
     )
     SELECT id, pg_notify('${DUE_CHANNEL}', '') FROM released`,
    [bundles.map((b) => b.id), bundles.map((b) => b.attempt), actor, reason],
  );
  return rows.map((r) => r.id);
}
