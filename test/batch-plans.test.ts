/**
 * The batched agent writes stay linear in their batch (issue 12). Both the finish and the step
 * write report, beside the rows they wrote, the rows they skipped as busy; that "not written"
 * test once ran as a nested loop over the written rows (NOT EXISTS on a CTE whose row estimate
 * is tiny), 51 ms of a 69 ms 1,000-row finish. The plans are read, not timed: a nested-loop
 * anti join over the CTE fails this test.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { claimAs, enqueueVip } from './support/fleet.js';
import { finishBundles } from '../src/agents/finisher.js';
import { writeSteps } from '../src/agents/fenced-writes.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';
import { unrunnableKindVersions } from '../src/bundles/read.js';

/** A Queryable that EXPLAINs (ANALYZE) what it is sent and keeps the plan; the caller rolls back. */
function explaining(client: pg.PoolClient, plan: string[]) {
  return {
    async query(sqlOrConfig: string | pg.QueryConfig, params?: unknown[]) {
      // Sent as text and values: a named statement's EXPLAIN would need its own name.
      const { text, values } = typeof sqlOrConfig === 'string' ? { text: sqlOrConfig, values: params } : sqlOrConfig;
      const r = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, COSTS OFF) ${text}`, values);
      plan.push(...r.rows.map((row) => row['QUERY PLAN']));
      return { rows: [] };
    },
  } as unknown as pg.PoolClient;
}

describe('batched agent writes', () => {
  it('find their busy rows with a hashed lookup, not a nested loop over the written ones', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 300);
    await db.pool.query('ANALYZE');
    const claimed = await claimAs(db.pool, { workerId: 'plans.1', limit: 300, leaseSeconds: 60 });
    expect(claimed).toHaveLength(300);
    const client = await db.pool.connect();
    try {
      const finishPlan: string[] = [];
      await client.query('BEGIN');
      await finishBundles(explaining(client, finishPlan), claimed.map((b) => ({ bundleId: b.id, attempt: b.attempt, kind: b.kind, actor: 'plans.1', outcome: 'completed' as const })));
      await client.query('ROLLBACK');

      const stepPlan: string[] = [];
      await client.query('BEGIN');
      await writeSteps(explaining(client, stepPlan), claimed.map((b) => ({
        fence: { bundleId: b.id, attempt: b.attempt, actor: 'plans.1', leaseSeconds: 60 },
        position: 0,
        name: 'show_tickets',
        key: stepIdempotencyKey(b.id, 'show_tickets'),
        status: 'booking' as const,
        reference: null,
      })));
      await client.query('ROLLBACK');

      for (const plan of [finishPlan, stepPlan]) {
        const text = plan.join('\n');
        // Every one of the 300 rows was written; the busy test ran once, hashed.
        expect(text).toMatch(/hashed SubPlan/);
        expect(text).not.toMatch(/Nested Loop Anti Join/);
      }
    } finally {
      client.release();
    }
  });

  it('the unfinished bundles of kind versions a build lacks (stats, the status page every 2 s, the workers) are found through indexes, not a scan of every bundle', async () => {
    const db = await createTestDb();
    await db.pool.query(
      `INSERT INTO bundles (id, booking_id, kind, kind_version, state, payload, finished_at)
       SELECT gen_random_uuid(), gen_random_uuid(), 'vip', 1, 'completed', '{}', now() FROM generate_series(1, 20000)`,
    );
    await enqueueVip(db.pool, 20);
    await db.pool.query('ANALYZE bundles');
    const client = await db.pool.connect();
    try {
      for (const opts of [{}, { claimableOnly: true }]) {
        const plan: string[] = [];
        await unrunnableKindVersions(explaining(client, plan), [{ kind: 'vip', version: 2 }], opts);
        expect(plan.join('\n'), JSON.stringify(opts)).not.toMatch(/Seq Scan on bundles/);
      }
    } finally {
      client.release();
    }
  });
});
