/**
 * Recovery figures, from bundle_history: for each bundle in flight on a worker when it was
 * SIGKILLed (or SIGSTOPped), the time from that moment until another attempt claimed it.
 */
import type pg from 'pg';
import type { Kill, RecoveryFigures } from './options.js';

export function percentile(sorted: number[], p: number): number | null {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/**
 * A bundle counts as in flight when the worker claimed it before the event and that attempt had
 * not ended by then. Re-claims whose wait overlaps the PostgreSQL restart are reported apart.
 */
export async function measureRecovery(pool: pg.Pool, events: Kill[], restartWindow: [number, number] | undefined, targetMs: number): Promise<RecoveryFigures> {
  const recoveries: number[] = [];
  const all: number[] = [];
  const resets: number[] = [];
  let inFlight = 0;
  let excluded = 0;
  for (const event of events) {
    const { rows } = await pool.query<{ bundle_id: string; ended_at: Date | null; ended_reason: string | null; reclaimed_at: Date | null }>(
      `SELECT c.bundle_id, e.at AS ended_at, e.reason AS ended_reason,
              (SELECT min(h.at) FROM bundle_history h
                WHERE h.bundle_id = c.bundle_id AND h.attempt > c.attempt AND h.to_state = 'running' AND h.reason LIKE 'claimed%') AS reclaimed_at
       FROM bundle_history c
       LEFT JOIN LATERAL (
         SELECT h.at, h.reason FROM bundle_history h
         WHERE h.bundle_id = c.bundle_id AND h.attempt = c.attempt AND h.to_state <> 'running'
         ORDER BY h.id LIMIT 1
       ) e ON true
       WHERE c.actor LIKE $1 || '.%' AND c.to_state = 'running' AND c.reason LIKE 'claimed%' AND c.at <= $2`,
      [event.name, new Date(event.at)],
    );
    for (const r of rows) {
      if (r.ended_at && r.ended_at.getTime() < event.at) continue; // finished before the event
      inFlight++;
      if (r.ended_at && /owner gone/.test(r.ended_reason ?? '')) resets.push(r.ended_at.getTime() - event.at);
      if (!r.reclaimed_at) continue;
      const ms = Math.max(0, r.reclaimed_at.getTime() - event.at);
      all.push(ms);
      // A PostgreSQL restart between the event and the re-claim delays it for reasons of its own.
      const overlapsRestart = restartWindow && restartWindow[0] <= r.reclaimed_at.getTime() && restartWindow[1] >= event.at;
      if (overlapsRestart) excluded++;
      else recoveries.push(ms);
    }
  }
  const sorted = recoveries.sort((a, b) => a - b);
  const sortedAll = all.sort((a, b) => a - b);
  const sortedResets = resets.sort((a, b) => a - b);
  return {
    kills: events.length,
    in_flight_at_kill: inFlight,
    reclaimed: all.length,
    measured: sorted.length,
    target_ms: targetMs,
    p50_ms: percentile(sorted, 50),
    p95_ms: percentile(sorted, 95),
    max_ms: percentile(sorted, 100),
    within_target: sorted.length ? sorted.at(-1)! <= targetMs : null,
    kill_to_reset_p50_ms: percentile(sortedResets, 50),
    kill_to_reset_max_ms: percentile(sortedResets, 100),
    excluded_pg_restart_window: excluded,
    all_incl_restart_window: { p50_ms: percentile(sortedAll, 50), max_ms: percentile(sortedAll, 100) },
  };
}
