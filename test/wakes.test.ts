/**
 * A NOTIFY that reaches a worker while it is claiming is not lost: the bundle it announces
 * committed after the running claim's snapshot, so that claim cannot see it, and a worker that
 * then slept its whole poll interval would leave it waiting (60 s here; 1 s by default) while a
 * slot stood free. The worker's pool goes through a proxy that holds the claim's reply, so the
 * claim is in flight, already committed, when the second bundle's NOTIFY arrives on the
 * liveness connection (which goes to PostgreSQL directly).
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { Worker } from '../src/scheduler/worker.js';
import { createTestDb, onCleanup } from './support/db.js';
import { startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { startTcpProxy } from '../src/chaos/tcp-proxy.js';
import { DUE_CHANNEL, enqueueBundles } from '../src/bundles/enqueue.js';
import { createLogger } from '../src/logger.js';
import { receiveSignal } from '../src/bundles/signals.js';

/** The worker holds its liveness lock and its first claim is done: no statement of its pool runs. */
async function workerIdle(pool: pg.Pool, worker: Worker): Promise<void> {
  await waitFor('the worker to hold its liveness lock', async () => worker.workerId !== undefined, 10_000);
  await waitFor('the worker idle', async () => {
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'bundlefleet worker %' AND state = 'active'`,
    );
    return rows[0]!.n === 0;
  });
}

describe('wakes', () => {
  it('a NOTIFY that arrives during a claim starts its bundle at once, not after the poll interval', async () => {
    const db = await createTestDb();
    const u = new URL(db.url);
    const proxy = await startTcpProxy(u.hostname, Number(u.port));
    onCleanup(() => proxy.close());
    // The first bundle's agent stays in its first provider call for the whole test, so no freed
    // slot wakes the worker either: only the NOTIFY (or the poll) can start the second bundle.
    const sim = await startSimulator({ latencyMs: 20_000 });
    const started = new Map<string, number>();
    const worker = startWorker(proxy.url(db.url), sim, {
      sessionDatabaseUrl: db.url,
      pollIntervalMs: 60_000,
      providerTimeoutMs: 30_000,
      concurrency: 4,
      onAgentStart: (id) => started.set(id, performance.now()),
    });
    // Its first claim (nothing due) is done and it sleeps: no statement of its pool is running.
    await workerIdle(db.pool, worker);

    const release = proxy.holdReplies();
    const [first] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    await waitFor('the first bundle claimed in the database, the reply held', async () => {
      const { rows } = await db.pool.query<{ state: string }>(`SELECT state FROM bundles WHERE id = $1`, [first!.vip_bundle_id]);
      return rows[0]!.state === 'running';
    });
    const [second] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    // The NOTIFY travels over loopback to the liveness connection; give it ample time to land.
    await new Promise((r) => setTimeout(r, 300));
    const releasedAt = performance.now();
    release();

    await waitFor('the second bundle started', async () => started.has(second!.vip_bundle_id), 10_000);
    expect(started.get(second!.vip_bundle_id)! - releasedAt).toBeLessThan(5_000);
    expect(started.has(first!.vip_bundle_id)).toBe(true);
  });

  it('a worker whose liveness connection was lost while it slept listens again at once, not after the poll interval', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const started = new Set<string>();
    const worker = startWorker(db.url, sim, { pollIntervalMs: 60_000, onAgentStart: (id) => started.add(id) });
    await waitFor('the worker to hold its liveness lock', async () => worker.workerId !== undefined, 10_000);
    const firstId = worker.workerId!;
    // Its LISTEN goes with the connection: until the worker connects again, no NOTIFY reaches it.
    await db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [`bundlefleet worker ${firstId}`]);
    await waitFor('a new liveness id', async () => worker.workerId !== undefined && worker.workerId !== firstId, 5_000);
    const [bundle] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    await waitFor('the bundle started', async () => started.has(bundle!.vip_bundle_id), 5_000);
  });

  it('a NOTIFY does not cut short the backoff after a failed claim', async () => {
    const db = await createTestDb();
    // The pool's URL refuses connections (a closed proxy); the liveness URL reaches PostgreSQL.
    const u = new URL(db.url);
    const proxy = await startTcpProxy(u.hostname, Number(u.port));
    const deadUrl = proxy.url(db.url);
    await proxy.close();
    const chunks: string[] = [];
    const logger = createLogger({ destination: { write: (s: string) => void chunks.push(s) }, level: 'info' });
    const failedClaims = () => chunks.join('').split('\n').filter((l) => l.includes('"claim failed; retrying"')).length;
    const sim = await startSimulator();
    const worker = startWorker(deadUrl, sim, { sessionDatabaseUrl: db.url, pollIntervalMs: 60_000, logger });
    await waitFor('the worker to hold its liveness lock', async () => worker.workerId !== undefined, 10_000);
    await waitFor('a first failed claim', async () => failedClaims() > 0, 5_000);
    const before = failedClaims();
    // 100 NOTIFYs over a second: the backoff (100 ms doubling to 5 s) allows about four more tries.
    for (let i = 0; i < 100; i++) {
      await db.pool.query(`SELECT pg_notify($1, '')`, [DUE_CHANNEL]);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(failedClaims() - before).toBeLessThanOrEqual(6);
  });

  it('a signal to a due bundle wakes a worker whose claim skipped it under the signal\'s row lock', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [bundle] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    // A session holds the bundle's row (as a signal's transaction does, FOR NO KEY UPDATE) while
    // the worker starts: its claim skips the row. The signal then waits for that lock, and
    // commits after it: the last writer to the row before the worker sleeps for its poll interval.
    const holder = await db.pool.connect();
    onCleanup(async () => holder.release());
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM bundles WHERE id = $1 FOR NO KEY UPDATE', [bundle!.vip_bundle_id]);
    const started = new Set<string>();
    const worker = startWorker(db.url, sim, { pollIntervalMs: 60_000, onAgentStart: (id) => started.add(id) });
    await workerIdle(db.pool, worker);
    const signal = receiveSignal(db.pool, { bundleId: bundle!.vip_bundle_id, name: 'inbound_ticketed' });
    await new Promise((r) => setTimeout(r, 100));
    await holder.query('COMMIT');
    expect((await signal).state).toBe('pending');
    expect(started.has(bundle!.vip_bundle_id)).toBe(false);
    await waitFor('the bundle started', async () => started.has(bundle!.vip_bundle_id), 5_000);
  });

  it('stop() during a claim does not wait out the poll interval before draining', async () => {
    const db = await createTestDb();
    const u = new URL(db.url);
    const proxy = await startTcpProxy(u.hostname, Number(u.port));
    onCleanup(() => proxy.close());
    const sim = await startSimulator();
    const worker = startWorker(proxy.url(db.url), sim, { sessionDatabaseUrl: db.url, pollIntervalMs: 60_000 });
    await workerIdle(db.pool, worker);
    // A NOTIFY starts a claim whose reply is held: stop() arrives while the claim is in flight.
    const release = proxy.holdReplies();
    await db.pool.query(`SELECT pg_notify($1, '')`, [DUE_CHANNEL]);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = performance.now();
    const stopped = worker.stop(0);
    release();
    await stopped;
    expect(performance.now() - t0).toBeLessThan(5_000);
  });
});

