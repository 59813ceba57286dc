/**
 * Issue 9, item 5: a row lock held by another session (an operator's open transaction, a
 * long-running report with FOR UPDATE) on one running bundle must not stall the agents whose
 * writes share a statement with it; that bundle's own agent waits a bounded time.
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, startSimulator, startWorker, waitFor } from './support/fleet.js';

describe('a row lock held from outside', () => {
  it('stalls only its own bundle: the batch-mates complete while the lock is held', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 100 });
    await enqueueVip(db.pool, 8);
    const worker = startWorker(db.url, sim, { concurrency: 8, name: 'batched' });
    await waitFor('eight agents in flight', async () => worker.activeCount === 8, 10_000);

    // Another session holds one running bundle's row for 4 s.
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    onCleanup(() => holder.end());
    await holder.query('BEGIN');
    const { rows: held } = await holder.query<{ id: string }>(`SELECT id FROM bundles WHERE state = 'running' ORDER BY id LIMIT 1 FOR UPDATE`);
    const lockedId = held[0]!.id;
    const lockedAt = Date.now();

    await waitFor('the seven others completed while the lock is held', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed' AND id <> $1`, [lockedId]);
      return rows[0]!.n === 7;
    }, 3_500);
    expect(Date.now() - lockedAt).toBeLessThan(4_000);
    const { rows: still } = await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [lockedId]);
    expect(still[0].state).toBe('running');

    await new Promise((r) => setTimeout(r, Math.max(0, 4_000 - (Date.now() - lockedAt))));
    await holder.query('COMMIT');
    await waitFor('the held bundle completed after the lock went', async () => {
      const { rows } = await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [lockedId]);
      return rows[0].state === 'completed';
    }, 15_000);
    // Finished alone (its row was busy), it still announced itself once, in the finishing transaction (invariant 6).
    const { rows: events } = await db.pool.query(
      `SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'VipBundleFinalized_v1' AND data->'header'->>'correlation_id' = $1`,
      [lockedId],
    );
    expect(events[0].n).toBe(1);
  });
});
