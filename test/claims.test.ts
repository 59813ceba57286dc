/**
 * The claim on real PostgreSQL: concurrent schedulers never claim the same bundle (SKIP LOCKED +
 * per-bundle advisory lock), a bundle whose backoff has not ended is left alone, and a claim
 * moves a bundle to `running` with a lease, its owner and a new attempt.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb, onCleanup } from './support/db.js';
import { vipPayload, claimAs } from './support/fleet.js';
import { createPool } from '../src/db/pool.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import type { ClaimedBundle } from '../src/scheduler/claim.js';

const LEASE = 60;

/** Claims in a tight loop with a small limit until no due bundle is left anywhere. */
async function claimUntilEmpty(pool: pg.Pool, workerId: string, limit: number): Promise<ClaimedBundle[]> {
  const mine: ClaimedBundle[] = [];
  for (;;) {
    const claimed = await claimAs(pool, { workerId, limit, leaseSeconds: LEASE });
    mine.push(...claimed);
    if (claimed.length) continue;
    // An empty claim can also mean "every due row is locked by another claimer right now".
    const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE state = 'pending'`);
    if (Number(rows[0]!.n) === 0) return mine;
  }
}

describe('claims', () => {
  it('are disjoint under concurrency: 500 bundles, four claimers, each bundle claimed exactly once', async () => {
    const db = await createTestDb();
    const enqueued = await enqueueBundles(
      db.pool,
      Array.from({ length: 500 }, (_, i) => ({ payload: { n: i } })),
      { kind: 'noop' },
    );
    const all = new Set(enqueued.map((e) => e.vip_bundle_id));
    expect(all.size).toBe(500);

    const claimers = ['c1', 'c2', 'c3', 'c4'];
    const pools = claimers.map(() => {
      const pool = createPool(db.url, { max: 2 });
      onCleanup(() => pool.end());
      return pool;
    });
    // Warm the connections so the claimers really start together.
    await Promise.all(pools.map((p) => p.query('SELECT 1')));
    const results = await Promise.all(claimers.map((id, i) => claimUntilEmpty(pools[i]!, id, 1 + (i % 3) * 2)));

    const union = results.flatMap((r) => r.map((b) => b.id));
    // No bundle was returned twice (neither to two claimers nor twice to one), and all were claimed.
    expect(union.length).toBe(500);
    expect(new Set(union).size).toBe(500);
    expect(new Set(union)).toEqual(all);
    for (let i = 0; i < results.length; i++) {
      for (let j = i + 1; j < results.length; j++) {
        const other = new Set(results[j]!.map((b) => b.id));
        expect(results[i]!.filter((b) => other.has(b.id))).toEqual([]);
      }
    }
    // More than one claimer did real work, so the claims did overlap in time.
    expect(results.filter((r) => r.length > 0).length).toBeGreaterThan(1);
    for (const r of results) for (const b of r) expect(b.attempt).toBe(1);

    const { rows } = await db.pool.query<{ id: string; state: string; attempt: number; locked_by: string; claims: string }>(
      `SELECT b.id, b.state, b.attempt, b.locked_by,
              (SELECT count(*) FROM bundle_history h WHERE h.bundle_id = b.id AND h.reason = 'claimed') AS claims
       FROM bundles b`,
    );
    expect(rows).toHaveLength(500);
    const owner = new Map(results.flatMap((r, i) => r.map((b) => [b.id, claimers[i]!] as const)));
    for (const row of rows) {
      expect(row).toMatchObject({ state: 'running', attempt: 1, claims: '1' });
      expect(row.locked_by).toBe(owner.get(row.id));
    }
  });

  it('leaves a bundle whose next_run_at is in the future', async () => {
    const db = await createTestDb();
    const [due, later] = await enqueueBundles(db.pool, [{ payload: vipPayload() }, { payload: vipPayload() }]);
    await db.pool.query(`UPDATE bundles SET next_run_at = now() + interval '1 hour' WHERE id = $1`, [later!.vip_bundle_id]);

    const claimed = await claimAs(db.pool, { workerId: 'w', limit: 10, leaseSeconds: LEASE });
    expect(claimed.map((b) => b.id)).toEqual([due!.vip_bundle_id]);
    expect(await claimAs(db.pool, { workerId: 'w', limit: 10, leaseSeconds: LEASE })).toEqual([]);

    const { rows } = await db.pool.query('SELECT state, attempt, locked_by FROM bundles WHERE id = $1', [later!.vip_bundle_id]);
    expect(rows[0]).toEqual({ state: 'pending', attempt: 0, locked_by: null });
    const history = await db.pool.query(`SELECT count(*)::int AS n FROM bundle_history WHERE bundle_id = $1 AND reason = 'claimed'`, [later!.vip_bundle_id]);
    expect(history.rows[0].n).toBe(0);
  });

  it('moves a bundle to running with its owner, a lease and attempt + 1', async () => {
    const db = await createTestDb();
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    const id = b!.vip_bundle_id;
    // A bundle that has been tried before: its attempt counts on from where it was.
    await db.pool.query('UPDATE bundles SET attempt = 3 WHERE id = $1', [id]);

    const [claimed] = await claimAs(db.pool, { workerId: 'worker-a.1.abc', limit: 5, leaseSeconds: 90 });
    expect(claimed).toMatchObject({ id, booking_id: b!.booking_id, kind: 'vip', phase: 'book', attempt: 4, from_state: 'pending' });

    const { rows } = await db.pool.query<{ state: string; attempt: number; locked_by: string; lease: number }>(
      `SELECT state, attempt, locked_by, extract(epoch FROM locked_until - now())::float8 AS lease FROM bundles WHERE id = $1`,
      [id],
    );
    expect(rows[0]).toMatchObject({ state: 'running', attempt: 4, locked_by: 'worker-a.1.abc' });
    expect(rows[0]!.lease).toBeGreaterThan(80);
    expect(rows[0]!.lease).toBeLessThanOrEqual(90);

    const history = await db.pool.query(
      `SELECT actor, attempt, from_state, to_state, reason FROM bundle_history WHERE bundle_id = $1 AND reason = 'claimed'`,
      [id],
    );
    expect(history.rows).toEqual([{ actor: 'worker-a.1.abc', attempt: 4, from_state: 'pending', to_state: 'running', reason: 'claimed' }]);

    // A running bundle is not claimed again.
    expect(await claimAs(db.pool, { workerId: 'worker-b', limit: 5, leaseSeconds: 90 })).toEqual([]);
  });
});
