/**
 * The reconciliation pass of an undone bundle (invariant 8). Tombstones — a provider remembering a
 * cancel of a key it has not seen, and refusing a late booking with it — are welcome but not
 * assumed: a zombie agent's request may reach a provider after the undo cancelled its key, and a
 * provider that forgets unknown cancels then books it. So once every call that could still be in
 * flight for a compensated or dead bundle has run out (lease + provider timeout × tries after it
 * finished: the finisher and the supervisor set `reconcile_at`), a worker asks the providers what
 * they hold for each of its step keys, cancels whatever is live, removes local records of steps
 * that hold nothing, and writes what it found to the timeline. Every call is idempotent, so two
 * reconcilers racing (one paused past its claim) do no harm.
 */
import pRetry from 'p-retry';
import type pg from 'pg';
import { bundleKind } from '../bundles/kinds.js';
import { MAX_RECONCILE_FAILURES, RECONCILE_RETRY_SECONDS } from '../bundles/reconciliation.js';
import type { ProviderClient } from '../providers/client.js';
import type { ClaimedReconciliation } from '../scheduler/claim.js';
import type { Logger } from '../logger.js';
import { loadSteps } from './fenced-writes.js';

export interface ReconcileDeps {
  pool: pg.Pool;
  providers: ProviderClient;
  workerId: string;
  logger: Logger;
  signal?: AbortSignal;
}

export interface ReconcileOutcome {
  done: boolean;
  /** Step names found live at a provider and cancelled. */
  cancelled: string[];
}

export async function reconcileBundle(claim: ClaimedReconciliation, deps: ReconcileDeps): Promise<ReconcileOutcome> {
  const kind = bundleKind(claim.kind, claim.kind_version);
  const log = deps.logger.child({ bundleId: claim.id, reconcile: claim.reconcile_attempts });
  const rows = await loadSteps(deps.pool, claim.id);
  const findings: string[] = [];
  const cancelled: string[] = [];
  const freeLocal: string[] = [];
  let unreached: string | undefined;
  for (const row of rows) {
    const step = kind.steps[row.position];
    if (!step?.lookup || !step.cancel) continue;
    const ctx = { bundleId: claim.id, bookingId: claim.booking_id, payload: {}, idempotencyKey: row.idempotency_key, providers: deps.providers, signal: deps.signal, exchange: { workerId: deps.workerId } };
    try {
      const held = await pRetry(() => step.lookup!(ctx), { retries: 2, minTimeout: 100, signal: deps.signal });
      if (held.status === 'booked') {
        await pRetry(() => step.cancel!(ctx), { retries: 2, minTimeout: 100, signal: deps.signal });
        cancelled.push(step.name);
        findings.push(`${step.name}: live ${held.reference}, cancelled`);
      } else {
        findings.push(`${step.name}: ${held.status === 'none' ? 'nothing held' : held.status}`);
      }
      if (step.localRecord) freeLocal.push(step.localRecord);
    } catch (err) {
      unreached = `${step.name}: ${(err as Error).message}`;
      findings.push(`${step.name}: not reached`);
    }
  }
  const done = unreached === undefined;
  // The pass holding the claim's mark is the only one running, so the count it read is current.
  const failures = done ? 0 : claim.reconcile_failures + 1;
  const alerted = failures >= MAX_RECONCILE_FAILURES;
  const reason = done
    ? `reconciled: ${findings.join('; ') || 'no step reached a provider'}`
    : alerted
      ? `reconciliation incomplete ${failures} passes in a row (an unreconciled alert is due), next pass in ${RECONCILE_RETRY_SECONDS / 60} min: ${findings.join('; ')}`
      : `reconciliation incomplete, will retry: ${findings.join('; ')}`;
  // Only the pass that holds the claim (its reconcile_at mark) finishes it. An incomplete pass keeps
  // the mark the claim moved forward, so it comes due again after the claim's lease; once alerted,
  // an hour later.
  await deps.pool.query(
    `WITH mine AS (
       UPDATE bundles SET reconcile_at = CASE WHEN $3 THEN NULL
                                              ELSE greatest(reconcile_at, now() + make_interval(secs => $8)) END,
                          reconcile_failures = $9
       WHERE id = $1 AND reconcile_at = $2::timestamptz AND state IN ('compensated', 'dead')
       RETURNING id, attempt, state
     ), local_tickets AS (
       DELETE FROM tickets USING mine WHERE tickets.bundle_id = mine.id AND 'tickets' = ANY($6::text[])
     )
     INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason, error)
     SELECT id, $4, attempt, state, state, $5, $7 FROM mine`,
    [claim.id, claim.claimed_until, done, deps.workerId, reason.slice(0, 2000), freeLocal, unreached ?? null, alerted ? RECONCILE_RETRY_SECONDS : 0, failures],
  );
  if (cancelled.length) log.warn({ cancelled }, 'reconciliation found live bookings for an undone bundle and cancelled them');
  else log.debug({ findings }, 'reconciled');
  return { done, cancelled };
}
