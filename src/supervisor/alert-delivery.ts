/**
 * Posting alerts to ALERT_WEBHOOK_URL, outside the supervisor's lease and within a time budget: a
 * webhook that is slow or never answers must not hold up recovery. Measured on main before this:
 * 50 alerts × a 5 s timeout held the fleet-wide lock for about 250 s, and a frozen holder forever.
 * Each alert is claimed before it is posted (alerts.ts), so several supervisors never post the
 * same one at once; a failed post is recorded and retried after a backoff, never dropped.
 */
import type { Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { claimAlertsForDelivery, recordDelivery, type Alert } from './alerts.js';

export interface DeliveryOptions {
  url: string;
  /** Total time one delivery run may take. Default 5000 ms. */
  budgetMs?: number;
  /** Timeout of one post. Default 5000 ms (and never past the budget). */
  requestTimeoutMs?: number;
  /** Posts in flight at once. Default 4. */
  concurrency?: number;
  logger: Logger;
}

async function post(url: string, alert: Alert, timeoutMs: number): Promise<string | null> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ alert }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    return res.ok ? null : `HTTP ${res.status}`;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Delivers due alerts until none is left or the budget is spent; returns how many were delivered. */
export async function deliverAlerts(db: Queryable, opts: DeliveryOptions): Promise<number> {
  const budgetMs = opts.budgetMs ?? 5_000;
  const deadline = performance.now() + budgetMs;
  const concurrency = opts.concurrency ?? 4;
  let delivered = 0;
  const lane = async () => {
    for (;;) {
      const left = deadline - performance.now();
      if (left < 100) return;
      const timeoutMs = Math.floor(Math.min(opts.requestTimeoutMs ?? 5_000, left));
      // Claimed for as long as the post may take, plus a margin; a crash mid-post only delays it.
      const [alert] = await claimAlertsForDelivery(db, 1, Math.ceil(timeoutMs / 1000) + 5);
      if (!alert) return;
      const error = await post(opts.url, alert, timeoutMs);
      await recordDelivery(db, alert.id, error);
      if (error) opts.logger.warn({ alertId: alert.id, err: error }, 'alert webhook failed; will retry after a backoff');
      else delivered++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return delivered;
}
