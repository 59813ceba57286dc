/**
 * Named prepared statements (db/statements.ts, issue 12): only on a pool that is a PostgreSQL
 * session, and only for small batches, whose generic plan fits them; a large batch is planned for
 * its size every time (a generic plan made a 1,000-row finish 7× slower). Behind a
 * transaction-mode pooler a worker with the session-URL split never names a statement
 * (test/pooler.test.ts runs such workers through one; with naming forced there they fail).
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { enqueueVip, holdWorkerLock, vipPayload } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { allowNamedStatementsOnSession } from '../src/db/session-probe.js';
import { createPool } from '../src/db/pool.js';
import { allowNamedStatements, GENERIC_PLAN_MAX_ROWS, statement } from '../src/db/statements.js';
import { claimBundles } from '../src/scheduler/claim.js';

describe('named statements', () => {
  it('are named on an allowed pool for small batches only, and never on another pool', () => {
    const allowed = createPool('postgres://127.0.0.1:9/none');
    const other = createPool('postgres://127.0.0.1:9/none');
    allowNamedStatements(allowed);
    expect(statement(allowed, 'x', 'SELECT 1', [], GENERIC_PLAN_MAX_ROWS)).toEqual({ name: 'x', text: 'SELECT 1', values: [] });
    expect(statement(allowed, 'x', 'SELECT 1', [], GENERIC_PLAN_MAX_ROWS + 1)).toEqual({ text: 'SELECT 1', values: [] });
    expect(statement(other, 'x', 'SELECT 1', [], 1)).toEqual({ text: 'SELECT 1', values: [] });
    void allowed.end();
    void other.end();
  });

  it("a small claim on an allowed pool is prepared on its connection; a large one, or one on another pool, is not", async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 60);
    const prepared = async (pool: typeof db.pool) =>
      (await pool.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name);

    const session = createPool(db.url, { max: 1 });
    allowNamedStatements(session);
    const other = createPool(db.url, { max: 1 });
    try {
      // The claimer's liveness lock, as a worker holds it.
      await holdWorkerLock(db.pool, 'named.1');
      const small = await claimBundles(session, { workerId: 'named.1', limit: 5, leaseSeconds: 60 });
      expect(small).toHaveLength(5);
      expect(await prepared(session)).toEqual(['bundlefleet_claim']);

      const allowedLarge = createPool(db.url, { max: 1 });
      allowNamedStatements(allowedLarge);
      expect(await claimBundles(allowedLarge, { workerId: 'named.1', limit: 40, leaseSeconds: 60 })).toHaveLength(40);
      expect(await prepared(allowedLarge)).toEqual([]);
      await allowedLarge.end();

      expect(await claimBundles(other, { workerId: 'named.1', limit: 5, leaseSeconds: 60 })).toHaveLength(5);
      expect(await prepared(other)).toEqual([]);
    } finally {
      await session.end();
      await other.end();
    }
  });

  it('a small enqueue, keyed or not, is prepared on a pool whose URL proved a session (as `serve` allows it); a large one is not', async () => {
    const db = await createTestDb();
    const prepared = async (pool: typeof db.pool) =>
      (await pool.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name);
    const session = createPool(db.url, { max: 1 });
    try {
      expect(await allowNamedStatementsOnSession(session, db.url)).toBe(true);
      await enqueueBundles(session, [{ payload: { i: 1 } }], { kind: 'noop' });
      expect(await prepared(session)).toEqual(['bundlefleet_enqueue_unkeyed']);
      // Keyed, with the kind's event, in a transaction on a connection of that pool; a replay
      // through the prepared statement finds the first bundle.
      const first = await enqueueBundles(session, [{ payload: vipPayload(1), idempotencyKey: 'named-1' }], { kindVersion: 1 });
      const again = await enqueueBundles(session, [{ payload: vipPayload(1), idempotencyKey: 'named-1' }], { kindVersion: 1 });
      expect(again).toEqual([{ ...first[0], created: false }]);
      expect(await prepared(session)).toEqual(['bundlefleet_enqueue_events', 'bundlefleet_enqueue_unkeyed']);
      const large = createPool(db.url, { max: 1 });
      expect(await allowNamedStatementsOnSession(large, db.url)).toBe(true);
      const rows = await enqueueBundles(large, Array.from({ length: 40 }, (_, i) => ({ payload: { i } })), { kind: 'noop' });
      expect(rows).toHaveLength(40);
      expect(await prepared(large)).toEqual([]);
      await large.end();
      const { rows: counts } = await db.pool.query<{ bundles: number; enqueued_by: number }>(
        `SELECT (SELECT count(*)::int FROM bundles) AS bundles, (SELECT count(*)::int FROM bundles WHERE enqueued_by IS NOT NULL) AS enqueued_by`,
      );
      expect(counts[0]).toEqual({ bundles: 42, enqueued_by: 42 });
    } finally {
      await session.end();
    }
  });
});
