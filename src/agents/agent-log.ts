/**
 * The agent's operator-facing log lines, kept apart from its control flow: how long a step and a
 * bundle took, each retry within an attempt with its cause, and why an agent was fenced out
 * (an operator cancel reads differently from a newer attempt taking over).
 */
import type { Queryable } from '../db/pool.js';
import { scrubText, type Logger } from '../logger.js';

/** 212 ms, 1.3 s, 2.1 min. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

/** p-retry's onFailedAttempt: one line per retry of a provider call, naming the step and the cause. */
export function logRetry(log: Logger, step: string) {
  return ({ error, attemptNumber, retriesLeft }: { error: Error; attemptNumber: number; retriesLeft: number }) => {
    if (retriesLeft > 0) log.warn({ step, try: attemptNumber, retriesLeft, error: scrubText(error.message) }, `step ${step}: provider call failed (${scrubText(error.message)}); retrying`);
  };
}

/** Says why this agent's write was refused: an operator cancelled its attempt, or a newer attempt owns the bundle. */
export async function logFencedOut(db: Queryable, bundle: { id: string; attempt: number }, log: Logger): Promise<void> {
  const { rows } = await db
    .query<{ state: string; cancelled_by: string | null }>(
      `SELECT b.state, (SELECT h.actor FROM bundle_history h WHERE h.bundle_id = b.id AND h.attempt = $2 AND h.reason = 'operator cancel' LIMIT 1) AS cancelled_by
       FROM bundles b WHERE b.id = $1`,
      [bundle.id, bundle.attempt],
    )
    .catch(() => ({ rows: [] as Array<{ state: string; cancelled_by: string | null }> }));
  const r = rows[0];
  if (r?.cancelled_by) log.info({ cancelledBy: r.cancelled_by, state: r.state }, 'stopped: an operator cancelled this bundle; its undo runs as a new attempt');
  else log.warn({ state: r?.state ?? 'unknown' }, 'fenced out: a newer attempt owns this bundle; stopping');
}
