/**
 * The work a chaos run gives the fleet: N VIP bundles (about --sold-out-share of them with a
 * sold-out return flight, the simulator's 501d0000-… ids, which it always refuses), enqueued in
 * batches spread over the enqueue window, each with an idempotency key so a batch retried across
 * the PostgreSQL restart is enqueued once.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { enqueueBundles } from '../bundles/enqueue.js';
import { exampleId, soldOutId } from '../providers/simulator.js';

/**
 * The VIP kind version most of a chaos run's bundles use: the four booking steps in a row. A share
 * (--waiting-share) use WAITING_KIND_VERSION, which books the same four provider steps with a wait
 * for the ticketing confirmations before the taxi: the same ledger keys, so the checks hold for both.
 */
export const CHAOS_KIND_VERSION = 1;
export const WAITING_KIND_VERSION = 2;

function payload(i: number, soldOut: boolean): Record<string, unknown> {
  return {
    customer_email: `chaos${i}@example.com`,
    show_id: exampleId(1, i % 7),
    number_of_tickets: 1 + (i % 4),
    passengers: [`Passenger ${i} A`, `Passenger ${i} B`],
    inbound_flight_id: exampleId(2, i % 13),
    return_flight_id: soldOut ? soldOutId(i) : exampleId(3, i % 11),
  };
}

/** Retries a database call through a PostgreSQL restart, for the runner's own statements. */
export async function retrying<T>(fn: () => Promise<T>, signal: AbortSignal | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline || signal?.aborted) throw err;
      await delay(250);
    }
  }
}

/** Enqueues the run's bundles from `start`, pushing each id onto `ids` as its batch commits. */
export async function enqueueWorkload(
  pool: pg.Pool,
  o: { bundles: number; soldOutShare: number; waitingShare: number; enqueueSeconds: number; runId: string; start: number; signal?: AbortSignal },
  ids: string[],
): Promise<void> {
  const soldOutEvery = o.soldOutShare > 0 ? 1 / o.soldOutShare : Infinity;
  const items = Array.from({ length: o.bundles }, (_, i) => ({
    payload: payload(i, Math.floor((i + 1) / soldOutEvery) > Math.floor(i / soldOutEvery)),
    idempotencyKey: `chaos:${o.runId}:${i}`,
  }));
  // Batches about every 250 ms, spread evenly over the enqueue window.
  const batches = Math.max(1, Math.min(items.length, Math.floor((o.enqueueSeconds * 1000) / 250)));
  const perBatch = Math.ceil(items.length / batches);
  const every = (o.enqueueSeconds * 1000) / Math.ceil(items.length / perBatch);
  for (let n = 0, start = 0; start < items.length; n++, start += perBatch) {
    const batch = items.slice(start, start + perBatch);
    // Every 1/waitingShare-th bundle waits for its ticketing confirmations (vip v2).
    const waitEvery = o.waitingShare > 0 ? Math.round(1 / o.waitingShare) : 0;
    const waits = (k: string) => waitEvery > 0 && Number(k.split(':').at(-1)) % waitEvery === waitEvery - 1;
    for (const [version, part] of [[CHAOS_KIND_VERSION, batch.filter((b) => !waits(b.idempotencyKey))], [WAITING_KIND_VERSION, batch.filter((b) => waits(b.idempotencyKey))]] as const) {
      if (!part.length) continue;
      const results = await retrying(() => enqueueBundles(pool, part, { actor: 'chaos', kindVersion: version }), o.signal, 120_000);
      ids.push(...results.map((r) => r.vip_bundle_id));
    }
    const next = o.start + (n + 1) * every;
    if (start + perBatch < items.length && next > Date.now()) await delay(next - Date.now(), undefined, { signal: o.signal });
  }
}
