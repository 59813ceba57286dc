/**
 * Parking: a bundle whose provider said "come back later" (429/503 with Retry-After) or whose
 * provider kind is paused or at its limit goes back to `pending` (or `compensating` while undoing)
 * with next_run_at at that time. It holds no worker meanwhile, and no failure is counted against
 * its attempts: the provider never said no, and nothing is unknown that a replay would not settle.
 */
import type pg from 'pg';
import { ProviderError } from '../errors.js';
import type { ProviderKind } from '../providers/client.js';
import { pauseKindSql } from '../providers/limits.js';
import { withAgentTimeouts, type Fence } from './fenced-writes.js';
import { ProviderParked } from './flow-control.js';

export interface ParkRequest {
  kind: ProviderKind;
  /** How long the window lasts (the kind's pause, when written, lasts exactly this). */
  delayMs: number;
  /** For the timeline and `inspect`: "flights said 429, Retry-After 3 s". */
  reason: string;
  /** The provider itself asked to wait: pause the whole kind fleet-wide too. */
  pauseKind: boolean;
}

/**
 * Shortest window a provider's own "come back later" parks a bundle for. `Retry-After: 0` (or a
 * date already past, e.g. from a provider whose clock runs slow) would otherwise send the bundle
 * straight back to a claim and the provider again, in a loop that counts no failure and so never
 * ends: with a simulator allowing 1 request/s, a bundle told "0" never completed (test/flow-park.test.ts).
 */
export const MIN_PROVIDER_PARK_MS = 1_000;

/** What a provider call's error asks for, when it is a window to wait for rather than a failure. */
export function parkRequest(err: unknown, kind: ProviderKind | undefined): ParkRequest | undefined {
  if (!kind || !(err instanceof ProviderError) || err.retryAfterMs === undefined) return undefined;
  if (err instanceof ProviderParked) return { kind, delayMs: err.retryAfterMs, reason: err.message, pauseKind: false };
  const after = err.retryAfterMs / 1000;
  const floor = err.retryAfterMs < MIN_PROVIDER_PARK_MS ? ` (waiting ${MIN_PROVIDER_PARK_MS / 1000} s at least)` : '';
  return {
    kind,
    delayMs: Math.max(err.retryAfterMs, MIN_PROVIDER_PARK_MS),
    reason: `${kind} said ${err.status ?? 'wait'}, Retry-After ${Number.isInteger(after) ? after : after.toFixed(1)} s${floor}`,
    pauseKind: true,
  };
}

/**
 * When a parked bundle runs again: after the window, plus up to half of it (at most 1 s) at random,
 * so that the bundles parked on one window do not all call the provider in the same instant it
 * opens (measured: 30 bundles, three workers, a provider allowing 10/s per kind: 24.7 s to finish
 * without the spread).
 */
export function parkedDelayMs(park: ParkRequest, random = Math.random): number {
  return Math.round(park.delayMs + random() * Math.min(1_000, park.delayMs / 2));
}

/**
 * The fenced park, in one statement with its history row and (when the provider asked) the kind's
 * fleet-wide pause. The pause is written even when fenced out: the provider's answer stands
 * whoever owns the bundle now. Returns false when a newer attempt owns the bundle.
 */
export async function parkBundle(pool: pg.Pool, f: Fence, step: string, park: ParkRequest): Promise<boolean> {
  const { rows } = await withAgentTimeouts(pool, (client) =>
    client.query(
      `WITH parked AS (
         UPDATE bundles SET state = CASE phase WHEN 'undo' THEN 'compensating' ELSE 'pending' END,
           locked_by = NULL, locked_until = NULL,
           next_run_at = now() + make_interval(secs => $9::float8 / 1000.0),
           parked_until = now() + make_interval(secs => $9::float8 / 1000.0),
           parked_reason = $5::text, parked_provider = $7::text,
           -- A park right after another (within a minute of its end) continues the same wait.
           parked_since = CASE WHEN parked_until >= now() - interval '60 seconds' THEN coalesce(parked_since, now()) ELSE now() END,
           updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'
         RETURNING id, state
       ), history AS (
         INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
         SELECT id, $3, $2, 'running', state, $6, 'parked: ' || $5::text FROM parked
       ), pause AS (${pauseKindSql({ kind: '$7::text', ms: '$4::float8', reason: '$5::text', by: '$3::text', when: '$8::boolean' })}
       )
       SELECT id FROM parked`,
      [f.bundleId, f.attempt, f.actor, park.delayMs, park.reason, step, park.kind, park.pauseKind, parkedDelayMs(park)],
    ),
  );
  return rows.length === 1;
}
