/**
 * Issue 9, items 2 and 3: a worker's liveness connection goes half-open (a TCP proxy blackholes
 * it: no FIN, no RST). The worker must notice within seconds, stop claiming under the dead id,
 * abort that id's agents, and carry on under a new id — and no healthy bundle may be driven
 * towards `dead` by orphan resets on the way.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, startSimulator, startWorker, waitFor, superviseInBackground } from './support/fleet.js';
import { startTcpProxy } from '../src/chaos/tcp-proxy.js';

async function proxyFor(url: string) {
  const u = new URL(url);
  const proxy = await startTcpProxy(u.hostname, Number(u.port));
  onCleanup(() => proxy.close());
  return proxy;
}

describe('liveness under a half-open connection', () => {
  it('stops claiming under an id whose lock is gone, takes a new one, and drives no bundle towards dead', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 20 });
    const proxy = await proxyFor(db.url);
    const worker = startWorker(proxy.url(db.url), sim, { concurrency: 4, name: 'cut' });
    await waitFor('the worker to hold its liveness lock', async () => worker.workerId !== undefined, 10_000);
    const firstId = worker.workerId!;
    // The liveness connection goes half-open and its backend dies: the lock is gone, the worker is not told.
    expect(proxy.blackhole((c) => c.applicationName === `bundlefleet worker ${firstId}`)).toBe(1);
    await db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [`bundlefleet worker ${firstId}`]);

    superviseInBackground(db.pool, { maxAttempts: 3, maxUndoAttempts: 3 });
    const bundles = await enqueueVip(db.pool, 20);
    await waitFor('every bundle terminal', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE state IN ('completed', 'compensated', 'dead')`);
      return rows[0]!.n === bundles.length;
    }, 40_000);
    const { rows } = await db.pool.query<{ state: string; failure_count: number }>('SELECT state, failure_count FROM bundles');
    expect(rows.every((r) => r.state === 'completed')).toBe(true);
    // No claim was made under the dead id, so the supervisor never had an orphan to reset.
    expect(rows.every((r) => r.failure_count === 0)).toBe(true);
    expect(worker.workerId).toBeDefined();
    expect(worker.workerId).not.toBe(firstId);
    const { rows: claimedBy } = await db.pool.query(`SELECT count(*)::int AS n FROM bundle_history WHERE actor = $1 AND reason = 'claimed'`, [firstId]);
    expect(claimedBy[0].n).toBe(0);
  });

  it('notices a blackholed liveness connection whose backend still holds the lock, aborts and releases its agents, and never overshoots its concurrency', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 1000 });
    const proxy = await proxyFor(db.url);
    const worker = startWorker(proxy.url(db.url), sim, { concurrency: 3, name: 'frozen-link', providerTimeoutMs: 3000 });
    await waitFor('the worker to hold its liveness lock', async () => worker.workerId !== undefined, 10_000);
    const firstId = worker.workerId!;
    let maxActive = 0;
    const sampler = setInterval(() => (maxActive = Math.max(maxActive, worker.activeCount)), 5);
    onCleanup(async () => clearInterval(sampler));

    await enqueueVip(db.pool, 6);
    await waitFor('three agents in flight', async () => worker.activeCount === 3, 10_000);
    const started = Date.now();
    // Nothing flows on the liveness connection any more; the server keeps the session (and its lock).
    expect(proxy.blackhole((c) => c.applicationName === `bundlefleet worker ${firstId}`)).toBe(1);
    await waitFor('a new worker id', async () => worker.workerId !== undefined && worker.workerId !== firstId, 15_000);
    const noticedMs = Date.now() - started;
    expect(noticedMs).toBeLessThan(8_000);
    // The old backend was terminated, so its lock is gone for the supervisor too.
    const { rows: old } = await db.pool.query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [`bundlefleet worker ${firstId}`]);
    expect(old).toEqual([]);

    await waitFor('all six completed', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed'`);
      return rows[0]!.n === 6;
    }, 30_000);
    const { rows: released } = await db.pool.query(`SELECT DISTINCT bundle_id FROM bundle_history WHERE actor = $1 AND reason = 'released: liveness lock lost'`, [firstId]);
    expect(released.length).toBeGreaterThan(0);
    expect(maxActive).toBeLessThanOrEqual(3);
    const { rows: counts } = await db.pool.query<{ failure_count: number }>('SELECT failure_count FROM bundles');
    expect(counts.every((r) => r.failure_count === 0)).toBe(true);
  });
});

describe('a half-open pool connection', () => {
  it('costs each half-open connection one bounded query, then the worker carries on on fresh ones', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const proxy = await proxyFor(db.url);
    const worker = startWorker(proxy.url(db.url), sim, { concurrency: 2, name: 'pooled', pollIntervalMs: 200 });
    await enqueueVip(db.pool, 2);
    await waitFor('the first bundles completed', async () => (await db.pool.query(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed'`)).rows[0].n === 2, 15_000);
    // Every idle pool connection of the worker goes half-open; its liveness connection stays healthy.
    expect(proxy.blackhole((c) => c.applicationName === 'bundlefleet worker pooled')).toBeGreaterThan(0);
    const started = Date.now();
    const [b] = await enqueueVip(db.pool, 1);
    await waitFor('the next bundle completed', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [b!.vip_bundle_id])).rows[0].state === 'completed', 90_000);
    const tookMs = Date.now() - started;
    // Each half-open connection costs the one query that picks it up the pool's 10 s bound (it was
    // 30 s); the worker had at most 4 pool connections.
    expect(tookMs).toBeLessThan(45_000);
    expect(worker.workerId).toBeDefined();
  });
});
