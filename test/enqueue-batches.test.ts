/**
 * Bulk enqueue in batches (issue 12): an input without keys is written two batches at a time,
 * each on its own connection (src/bundles/enqueue.ts). Whatever the order the batches commit in,
 * the caller gets one result per item in input order, each bundle holds its own payload, every
 * bundle has its history row and its event, progress only moves forward, and a failed batch
 * throws only once no batch of the call is still being written.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { vipPayload } from './support/fleet.js';
import { createPool } from '../src/db/pool.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';

const count = async (pool: import('pg').Pool, from: string) => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${from}`)).rows[0]!.n;

describe('a bulk enqueue in many batches', () => {
  for (const max of [1, 4]) {
    it(`returns the bundles in input order with their payloads, history and events (pool of ${max})`, async () => {
      const db = await createTestDb();
      const pool = createPool(db.url, { max });
      try {
        const payloads = Array.from({ length: 333 }, (_, i) => ({ ...vipPayload(i), seq: i }));
        const progress: number[] = [];
        const results = await enqueueBundles(pool, payloads.map((payload) => ({ payload })), { kindVersion: 1, batchSize: 40, onProgress: (done) => progress.push(done) });

        expect(results).toHaveLength(333);
        expect(new Set(results.map((r) => r.vip_bundle_id)).size).toBe(333);
        const { rows } = await db.pool.query<{ id: string; booking_id: string; seq: number }>(`SELECT id, booking_id, (payload->>'seq')::int AS seq FROM bundles`);
        const byId = new Map(rows.map((r) => [r.id, r]));
        results.forEach((r, i) => {
          expect(byId.get(r.vip_bundle_id)).toEqual({ id: r.vip_bundle_id, booking_id: r.booking_id, seq: i });
          expect(r.created).toBe(true);
        });
        // Each bundle's enqueue is its timeline's first entry, kept in its row (sql/010_enqueued_by.sql).
        expect(await count(db.pool, `bundles WHERE enqueued_by = 'enqueue'`)).toBe(333);
        expect(await count(db.pool, 'bundle_history')).toBe(0);
        expect(await count(db.pool, `pgboss.job WHERE name = 'VipBundleInitialized_v1'`)).toBe(333);
        expect(progress).toEqual([40, 80, 120, 160, 200, 240, 280, 320, 333]);
      } finally {
        await pool.end();
      }
    });
  }

  it('throws a failed batch only once the batches still in flight have settled, the ones before it enqueued', async () => {
    const db = await createTestDb();
    // The third batch is slow on the server (a trigger on this test's database sleeps on its first row),
    // so it is still being written when the second fails.
    await db.pool.query(`CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.payload ? 'slow' THEN PERFORM pg_sleep(0.5); END IF; RETURN NEW; END $$`);
    await db.pool.query('CREATE TRIGGER slow BEFORE INSERT ON bundles FOR EACH ROW EXECUTE FUNCTION slow_insert()');
    // Item 150 (second batch) cannot be stored: jsonb refuses \u0000, so that batch's statement fails.
    const items = Array.from({ length: 400 }, (_, i) => ({ payload: i === 150 ? { note: 'nul \u0000 here' } : i === 200 ? { i, slow: true } : { i } }));
    const err = await enqueueBundles(db.pool, items, { kind: 'noop', batchSize: 100 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(err)).toMatch(/unsupported Unicode escape sequence|\\u0000/);
    // The first batch committed; the third was sent (when the first settled) before the second's
    // failure was read, and had committed by the time the call threw; the fourth was never sent.
    expect(await count(db.pool, 'bundles')).toBe(200);
    expect(await count(db.pool, `bundles WHERE (payload->>'i')::int < 100`)).toBe(100);
    expect(await count(db.pool, `bundles WHERE (payload->>'i')::int BETWEEN 200 AND 299`)).toBe(100);
  });
});
