/**
 * Invariant 6: events (pg-boss jobs, our outbox) are written in the same transaction as the state
 * they announce — they commit together or not at all.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import PgBoss from 'pg-boss';
import { createTestDb, onCleanup } from './support/db.js';
import { allInState, enqueueVip, startSimulator, startWorker, vipPayload, waitFor, claimAs } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { publishEvents, type EventEnvelope } from '../src/bundles/events.js';
import { withTransaction } from '../src/db/pool.js';
import { Finisher } from '../src/agents/finisher.js';

async function jobs(pool: pg.Pool, name: string): Promise<EventEnvelope[]> {
  const { rows } = await pool.query<{ data: EventEnvelope }>('SELECT data FROM pgboss.job WHERE name = $1 ORDER BY created_on', [name]);
  return rows.map((r) => r.data);
}

async function count(pool: pg.Pool, sql: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`);
  return rows[0]!.n;
}

/** A consumer's pg-boss on the test database, stopped at cleanup. */
async function startBoss(url: string): Promise<PgBoss> {
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false, max: 2 });
  boss.on('error', () => {});
  await boss.start();
  onCleanup(() => boss.stop({ graceful: false, wait: true }));
  return boss;
}

/** A check on `table` that fails only at COMMIT, after every statement of the transaction has run. */
async function failAtCommit(pool: pg.Pool, table: string, when = 'true'): Promise<void> {
  await pool.query(`CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$`);
  await pool.query(`CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT OR UPDATE ON ${table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (${when}) EXECUTE FUNCTION fail_at_commit()`);
}

describe('events in the same transaction as the state', () => {
  it('publishes one VipBundleInitialized_v1 per enqueued bundle, then one VipBundleFinalized_v1 on completion', async () => {
    const db = await createTestDb();
    const bundles = await enqueueVip(db.pool, 3);
    const ids = bundles.map((b) => b.vip_bundle_id).sort();

    const initialized = await jobs(db.pool, 'VipBundleInitialized_v1');
    expect(initialized.map((e) => e.header.correlation_id).sort()).toEqual(ids);
    for (const e of initialized) {
      const b = bundles.find((x) => x.vip_bundle_id === e.header.correlation_id)!;
      expect(e.header.event_name).toBe('VipBundleInitialized_v1');
      expect(e.header.event_id).toMatch(/^[0-9a-f-]{36}$/);
      expect(Number.isNaN(Date.parse(e.header.published_at))).toBe(false);
      expect(e.data).toEqual({ vip_bundle_id: b.vip_bundle_id, booking_id: b.booking_id });
    }
    expect(new Set(initialized.map((e) => e.header.event_id)).size).toBe(3);
    expect(await jobs(db.pool, 'VipBundleFinalized_v1')).toEqual([]);

    // Enqueueing the same request again under its idempotency key announces nothing new.
    const keyedPayload = vipPayload();
    const keyed = await enqueueBundles(db.pool, [{ payload: keyedPayload, idempotencyKey: 'k-1' }], { kindVersion: 1 });
    await enqueueBundles(db.pool, [{ payload: keyedPayload, idempotencyKey: 'k-1' }], { kindVersion: 1 });
    expect((await jobs(db.pool, 'VipBundleInitialized_v1')).filter((e) => e.header.correlation_id === keyed[0]!.vip_bundle_id)).toHaveLength(1);

    const sim = await startSimulator();
    startWorker(db.url, sim);
    await waitFor('all completed', () => allInState(db.pool, ['completed']));
    const finalized = await jobs(db.pool, 'VipBundleFinalized_v1');
    expect(finalized.map((e) => e.header.correlation_id).sort()).toEqual([...ids, keyed[0]!.vip_bundle_id].sort());
    for (const e of finalized) expect(e.data).toMatchObject({ vip_bundle_id: e.header.correlation_id, outcome: 'completed' });
    expect(await jobs(db.pool, 'VipBundleFailed_v1')).toEqual([]);
  });

  it('leaves no job when the transaction that published it rolls back', async () => {
    const db = await createTestDb();
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      await publishEvents(client, [{ name: 'VipBundleFailed_v1', correlationId: '00000000-0000-4000-8000-000000000001', data: { x: 1 } }]);
      // Visible inside the transaction: the insert really happened on this connection.
      const inside = await client.query(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'VipBundleFailed_v1'`);
      expect(inside.rows[0].n).toBe(1);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    expect(await jobs(db.pool, 'VipBundleFailed_v1')).toEqual([]);

    // And the same call committed does leave the job.
    await withTransaction(db.pool, (c) => publishEvents(c, [{ name: 'VipBundleFailed_v1', correlationId: '00000000-0000-4000-8000-000000000002', data: {} }]));
    expect((await jobs(db.pool, 'VipBundleFailed_v1')).map((e) => e.header.correlation_id)).toEqual(['00000000-0000-4000-8000-000000000002']);
  });

  it('writes neither bundle nor event when the enqueue transaction fails at commit', async () => {
    const db = await createTestDb();
    await failAtCommit(db.pool, 'bundles');
    await expect(enqueueVip(db.pool, 2)).rejects.toThrow(/injected failure at commit/);
    expect(await count(db.pool, 'bundles')).toBe(0);
    expect(await count(db.pool, 'bundle_history')).toBe(0);
    expect(await jobs(db.pool, 'VipBundleInitialized_v1')).toEqual([]);
  });

  it('writes neither bundle nor event when the event insert fails', async () => {
    const db = await createTestDb();
    // Drop the pg-boss partition of the queue: the job insert then fails ("no partition of relation").
    const { rows } = await db.pool.query<{ partition_name: string }>(`SELECT partition_name FROM pgboss.queue WHERE name = 'VipBundleInitialized_v1'`);
    expect(rows).toHaveLength(1);
    await db.pool.query(`DROP TABLE pgboss."${rows[0]!.partition_name}"`);
    await expect(enqueueVip(db.pool, 2)).rejects.toThrow();
    expect(await count(db.pool, 'bundles')).toBe(0);
    expect(await count(db.pool, 'bundle_history')).toBe(0);
  });

  it('writes neither the completion nor VipBundleFinalized_v1 when the finishing transaction fails at commit', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const [claimed] = await claimAs(db.pool, { workerId: 'w', limit: 1, leaseSeconds: 60 });
    await failAtCommit(db.pool, 'bundles', `NEW.state = 'completed'`);
    const finisher = new Finisher(db.pool);
    await expect(finisher.finish({ bundleId: b!.vip_bundle_id, attempt: claimed!.attempt, kind: 'vip', actor: 'w', outcome: 'completed' })).rejects.toThrow(/injected failure/);
    const { rows } = await db.pool.query('SELECT state, attempt FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    expect(rows[0]).toEqual({ state: 'running', attempt: 1 });
    expect(await jobs(db.pool, 'VipBundleFinalized_v1')).toEqual([]);
    expect(await count(db.pool, `bundle_history WHERE to_state = 'completed'`)).toBe(0);

    // Without the injected failure the same finish commits the state and its event together.
    await db.pool.query('DROP TRIGGER fail_at_commit ON bundles');
    expect(await finisher.finish({ bundleId: b!.vip_bundle_id, attempt: 1, kind: 'vip', actor: 'w', outcome: 'completed' })).toBe(true);
    expect((await jobs(db.pool, 'VipBundleFinalized_v1')).map((e) => e.header.correlation_id)).toEqual([b!.vip_bundle_id]);
  });

  it('leaves the bundle running when VipBundleFinalized_v1 cannot be written', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const [claimed] = await claimAs(db.pool, { workerId: 'w', limit: 1, leaseSeconds: 60 });
    const { rows: queue } = await db.pool.query<{ partition_name: string }>(`SELECT partition_name FROM pgboss.queue WHERE name = 'VipBundleFinalized_v1'`);
    await db.pool.query(`DROP TABLE pgboss."${queue[0]!.partition_name}"`);
    const finisher = new Finisher(db.pool);
    await expect(finisher.finish({ bundleId: b!.vip_bundle_id, attempt: claimed!.attempt, kind: 'vip', actor: 'w', outcome: 'completed' })).rejects.toThrow();
    const { rows } = await db.pool.query('SELECT state, attempt, finished_at FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    expect(rows[0]).toEqual({ state: 'running', attempt: 1, finished_at: null });
    expect(await count(db.pool, `bundle_history WHERE to_state = 'completed'`)).toBe(0);
  });
});

describe('fan-out: every subscribed queue gets every event', () => {
  it('two consumers subscribed with pg-boss each receive every event, with the same event ids, in the same transaction', async () => {
    const db = await createTestDb();
    // Two consumers, as they would set themselves up: their own queue, subscribed to the events they want.
    const boss = await startBoss(db.url);
    for (const queue of ['billing', 'crm']) {
      await boss.createQueue(queue);
      for (const event of ['VipBundleInitialized_v1', 'VipBundleFinalized_v1']) await boss.subscribe(event, queue);
    }

    const bundles = await enqueueVip(db.pool, 3);
    const sim = await startSimulator();
    startWorker(db.url, sim);
    await waitFor('all completed', () => allInState(db.pool, ['completed']));

    const received = async (queue: string) => {
      const got = ((await boss.fetch<EventEnvelope>(queue, { batchSize: 100 })) ?? []).map((j) => j.data);
      return got.map((e) => `${e.header.event_name} ${e.header.correlation_id} ${e.header.event_id}`).sort();
    };
    const billing = await received('billing');
    const crm = await received('crm');
    expect(billing).toHaveLength(6);
    expect(crm).toEqual(billing);
    const expected = bundles.flatMap((b) => [`VipBundleInitialized_v1 ${b.vip_bundle_id}`, `VipBundleFinalized_v1 ${b.vip_bundle_id}`]).sort();
    expect(billing.map((line) => line.split(' ').slice(0, 2).join(' ')).sort()).toEqual(expected);
    // Each event's own queue still gets its copy (boss.work(eventName) keeps working).
    expect(await jobs(db.pool, 'VipBundleFinalized_v1')).toHaveLength(3);
    // Nobody subscribed to failures: they go to their own queue only.
    expect(await count(db.pool, `pgboss.job WHERE name IN ('billing', 'crm') AND data->'header'->>'event_name' = 'VipBundleFailed_v1'`)).toBe(0);

    // A rolled-back transaction leaves no copy in any queue.
    await expect(
      withTransaction(db.pool, async (c) => {
        await publishEvents(c, [{ name: 'VipBundleFinalized_v1', correlationId: '00000000-0000-4000-8000-000000000009', data: {} }]);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await count(db.pool, `pgboss.job WHERE data->'header'->>'correlation_id' = '00000000-0000-4000-8000-000000000009'`)).toBe(0);
  });

  it("fails the publishing transaction when a subscriber's copy cannot be written (nothing is dropped silently)", async () => {
    const db = await createTestDb();
    const boss = await startBoss(db.url);
    await boss.createQueue('billing');
    await boss.subscribe('VipBundleInitialized_v1', 'billing');
    const { rows } = await db.pool.query<{ partition_name: string }>(`SELECT partition_name FROM pgboss.queue WHERE name = 'billing'`);
    await db.pool.query(`DROP TABLE pgboss."${rows[0]!.partition_name}"`);
    await expect(enqueueVip(db.pool, 1)).rejects.toThrow();
    expect(await count(db.pool, 'bundles')).toBe(0);
    expect(await jobs(db.pool, 'VipBundleInitialized_v1')).toEqual([]);
  });
});

describe("the job rows are pg-boss's own", () => {
  it("publishes jobs whose every column is what pg-boss's insert() writes, with a queue's own settings and without", async () => {
    const db = await createTestDb();
    const boss = await startBoss(db.url);
    await boss.createQueue('dlq');
    await boss.createQueue('billing', { name: 'billing', policy: 'standard', retryLimit: 5, retryDelay: 3, retryBackoff: true, expireInSeconds: 120, retentionMinutes: 90, deadLetter: 'dlq' });
    await boss.createQueue('crm', { name: 'crm', retryDelay: 7 });
    await boss.subscribe('VipBundleFailed_v1', 'billing');
    await boss.subscribe('VipBundleFailed_v1', 'crm');

    // A pg-boss upgrade that adds a column to its jobs must be looked at here.
    const { rows: columns } = await db.pool.query<{ column_name: string }>(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'pgboss' AND table_name = 'job' ORDER BY ordinal_position`);
    const compared = ['name', 'priority', 'state', 'retry_limit', 'retry_count', 'retry_delay', 'retry_backoff', 'singleton_key', 'singleton_on', 'expire_in', 'started_on', 'completed_on', 'output', 'dead_letter', 'policy'];
    expect(columns.map((c) => c.column_name).sort()).toEqual([...compared, 'id', 'data', 'start_after', 'created_on', 'keep_until'].sort());

    const ours = '00000000-0000-4000-8000-0000000000a1';
    const theirs = '00000000-0000-4000-8000-0000000000b2';
    await withTransaction(db.pool, (c) => publishEvents(c, [{ name: 'VipBundleFailed_v1', correlationId: ours, data: { n: 1 } }]));
    await withTransaction(db.pool, (c) =>
      // What the outbox wrote before stop 20: pg-boss's insert() on the caller's connection, from a PgBoss made without config.
      new PgBoss({ db: { executeSql: (text: string, values?: unknown[]) => c.query(text, values) } }).insert(
        ['VipBundleFailed_v1', 'billing', 'crm'].map((name) => ({ name, data: { header: { correlation_id: theirs }, data: { n: 1 } } })),
      ),
    );
    const rowsOf = async (correlation: string) =>
      (
        await db.pool.query(
          `SELECT ${compared.join(', ')}, start_after - created_on AS start_delay, keep_until - created_on AS kept_for
           FROM pgboss.job WHERE data->'header'->>'correlation_id' = $1 ORDER BY name`,
          [correlation],
        )
      ).rows;
    const expected = await rowsOf(theirs);
    expect(expected.map((r) => r.name)).toEqual(['VipBundleFailed_v1', 'billing', 'crm']);
    expect(await rowsOf(ours)).toEqual(expected);
    // The queue's settings were used, so the comparison above covers them.
    expect(expected[1]).toMatchObject({ retry_limit: 5, retry_delay: 3, retry_backoff: true, dead_letter: 'dlq', policy: 'standard' });

    // The envelope: one event id for every copy, each job an id of its own (pg-boss's expiry sweep
    // tells jobs apart by id alone), published_at as toISOString() writes it.
    const { rows: copies } = await db.pool.query<{ id: string; data: EventEnvelope; created_on: Date }>(`SELECT id, data, created_on FROM pgboss.job WHERE data->'header'->>'correlation_id' = $1`, [ours]);
    const eventId = copies[0]!.data.header.event_id;
    expect(new Set(copies.map((c) => c.data.header.event_id))).toEqual(new Set([eventId]));
    expect(new Set([eventId, ...copies.map((c) => c.id)]).size).toBe(copies.length + 1);
    for (const c of copies) {
      expect(c.data).toEqual({ header: { event_id: eventId, event_name: 'VipBundleFailed_v1', published_at: expect.any(String), correlation_id: ours }, data: { n: 1 } });
      expect(c.data.header.published_at).toBe(new Date(Math.floor(c.created_on.getTime())).toISOString());
    }
  });
});
