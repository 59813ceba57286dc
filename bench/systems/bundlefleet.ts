/**
 * bundlefleet through its library API, in-process: enqueueBundles() and new Worker().
 */
import pg from 'pg';
import pino from 'pino';
import { createPool } from '../../src/db/pool.js';
import { exampleId } from '../../src/providers/simulator.js';
import { migrate } from '../../src/db/migrate.js';
import { enqueueBundles, type EnqueueItem } from '../../src/bundles/enqueue.js';
import { allowNamedStatementsOnSession } from '../../src/db/session-probe.js';
import { Worker, type WorkerOptions } from '../../src/scheduler/worker.js';
import { claimBundles } from '../../src/scheduler/claim.js';
import { WORKER_LOCK_KEY_SQL } from '../../src/scheduler/liveness.js';
import type { ProviderUrls } from '../../src/providers/client.js';
import { now, percentile, preSampleSleep, waitFor, type LatencySampler } from '../lib/util.js';

/** Errors only, on stderr: per-bundle info logging would be measured as well otherwise. */
export const benchLogger = pino({ level: 'error' }, pino.destination(2));

export const NO_PROVIDERS: ProviderUrls = { tickets: 'http://127.0.0.1:9', flights: 'http://127.0.0.1:9', taxis: 'http://127.0.0.1:9' };

export async function setup(url: string): Promise<pg.Pool> {
  const pool = createPool(url, { max: 4, applicationName: 'bench' });
  await migrate(pool, url);
  return pool;
}

export function noopItems(n: number, offset = 0): EnqueueItem[] {
  return Array.from({ length: n }, (_, i) => ({ payload: { i: offset + i } }));
}

export function vipItems(n: number): EnqueueItem[] {
  return Array.from({ length: n }, (_, i) => ({
    payload: {
      customer_email: `c${i}@example.com`,
      show_id: exampleId(1, i % 50),
      number_of_tickets: 2,
      passengers: ['Ada Lovelace', 'Alan Turing'],
      inbound_flight_id: exampleId(2, i % 20),
      return_flight_id: exampleId(3, i % 20),
    },
  }));
}

export async function enqueue(pool: pg.Pool, items: EnqueueItem[], kind: 'noop' | 'vip', batchSize: number): Promise<number> {
  const t0 = now();
  // vip v1: the four-step bundle the scenarios measure (v2 adds the ticketing wait).
  await enqueueBundles(pool, items, { kind, batchSize, kindVersion: kind === 'vip' ? 1 : undefined });
  return (now() - t0) / 1000;
}

export async function countState(pool: pg.Pool, state: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM bundles WHERE state = $1', [state]);
  return rows[0]!.n;
}

/**
 * Starts a worker and times it from just before its start until the database shows all `n`
 * bundles completed. In-process outcomes tell when to start asking the database.
 */
export async function processAll(pool: pg.Pool, url: string, n: number, opts: Partial<WorkerOptions> & { providerUrls?: ProviderUrls }): Promise<{ seconds: number; outcomes: Record<string, number> }> {
  const outcomes: Record<string, number> = {};
  let finished = 0;
  const t0 = now();
  const worker = new Worker({
    databaseUrl: url,
    providerUrls: opts.providerUrls ?? NO_PROVIDERS,
    logger: benchLogger,
    ...opts,
    onOutcome: (o) => {
      outcomes[o] = (outcomes[o] ?? 0) + 1;
      finished++;
    },
  });
  worker.start();
  try {
    await waitFor('in-process outcomes', () => finished >= n, { intervalMs: 2, timeoutMs: 600_000 });
    await waitFor('database shows all completed', async () => (await countState(pool, 'completed')) >= n, { intervalMs: 2, timeoutMs: 60_000 });
    const seconds = (now() - t0) / 1000;
    return { seconds, outcomes };
  } finally {
    await worker.stop(5_000);
  }
}

/** Enqueue one → agent start, on an idle worker, clocked in this process. */
export async function latencySampler(pool: pg.Pool, url: string): Promise<LatencySampler> {
  const pollIntervalMs = 1000;
  const started = new Map<string, number>();
  const worker = new Worker({
    databaseUrl: url,
    providerUrls: NO_PROVIDERS,
    logger: benchLogger,
    pollIntervalMs,
    onAgentStart: (id) => started.set(id, now()),
  });
  // The enqueuing pool as `bundlefleet serve` has it: small statements named on a session URL.
  await allowNamedStatementsOnSession(pool, url);
  worker.start();
  // Let the worker take its liveness lock and LISTEN before the first sample.
  await waitFor('worker ready', () => worker.workerId !== undefined, { timeoutMs: 10_000 });
  return {
    pollIntervalMs,
    async sample(i) {
      const t0 = now();
      const [r] = await enqueueBundles(pool, [{ payload: { i } }], { kind: 'noop' });
      await waitFor('agent start', () => started.has(r!.vip_bundle_id), { intervalMs: 1, timeoutMs: 30_000 });
      return started.get(r!.vip_bundle_id)! - t0;
    },
    close: async () => void (await worker.stop(5_000)),
  };
}

/**
 * The claim statement alone, timed round trip, alternating between databases so that any
 * background load falls on both alike. Returns per-database samples in ms.
 */
export async function claimLatency(pools: pg.Pool[], samples: number, limit = 1, warmups = 20): Promise<number[][]> {
  const out = pools.map(() => [] as number[]);
  const clients = await Promise.all(pools.map((p) => p.connect()));
  // A claim succeeds only while its claimer holds its liveness lock, on a session of its own (as
  // a worker's liveness connection does).
  const lockHolders = await Promise.all(pools.map((p) => p.connect()));
  for (const h of lockHolders) await h.query(`SELECT pg_advisory_lock(${WORKER_LOCK_KEY_SQL})`, ['bench-claim']);
  try {
    for (let i = 0; i < warmups + samples; i++) {
      for (let d = 0; d < clients.length; d++) {
        const t0 = now();
        const claimed = await claimBundles(clients[d]!, { workerId: 'bench-claim', limit, leaseSeconds: 60 });
        const ms = now() - t0;
        if (claimed.length !== limit) throw new Error(`claim returned ${claimed.length}, expected ${limit}`);
        if (i >= warmups) out[d]!.push(ms);
      }
    }
  } finally {
    for (const c of clients) c.release();
    for (const h of lockHolders) h.release(true);
  }
  return out;
}

/** Adds `n` finished (completed) bundles with one history row each, in batches, untimed. */
export async function addFinished(pool: pg.Pool, n: number, batch = 100_000): Promise<void> {
  for (let start = 0; start < n; start += batch) {
    const count = Math.min(batch, n - start);
    await pool.query(
      `WITH ins AS (
         INSERT INTO bundles (id, booking_id, kind, state, payload, attempt, created_at, updated_at, finished_at, next_run_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'noop', 'completed', jsonb_build_object('i', g), 1,
                now() - interval '1 day', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
         FROM generate_series($1::int, $2::int) g
         RETURNING id
       )
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
       SELECT id, 'bench', 1, 'running', 'completed', 'all steps booked' FROM ins`,
      [start, start + count - 1],
    );
  }
}

export { Worker };
