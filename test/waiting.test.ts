/**
 * Issue 11, part 2: a vip (v2) bundle waits, holding no worker, for both ticketing confirmations
 * after its flights are booked; they arrive in any order, possibly twice, possibly before the
 * bundle reaches its wait; only then is the taxi booked. A wait past its deadline is compensated.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb, onCleanup } from './support/db.js';
import { startHttpServer } from '../src/http/server.js';
import { quietLogger, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { receiveSignal } from '../src/bundles/signals.js';
import { runOnce } from '../src/supervisor/supervisor.js';
import { BadInput } from '../src/errors.js';

async function enqueueV2(pool: pg.Pool, n = 1): Promise<string[]> {
  const r = await enqueueBundles(pool, Array.from({ length: n }, () => ({ payload: vipPayload() })));
  return r.map((b) => b.vip_bundle_id);
}

async function row(pool: pg.Pool, id: string) {
  return (await pool.query('SELECT state, kind_version, locked_by, waiting_for, wait_deadline FROM bundles WHERE id = $1', [id])).rows[0];
}

const state = async (pool: pg.Pool, id: string) => (await row(pool, id)).state as string;

async function reasons(pool: pg.Pool, id: string): Promise<string[]> {
  return (await pool.query('SELECT reason FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [id])).rows.map((r) => r.reason);
}

describe('waiting for external confirmations', () => {
  it('waits after the flights, holding no worker, and books the taxi once both signals are in (either order, one twice)', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [a, b] = await enqueueV2(db.pool, 2);
    const worker = startWorker(db.url, sim, { concurrency: 2 });
    await waitFor('both waiting', async () => (await state(db.pool, a!)) === 'waiting' && (await state(db.pool, b!)) === 'waiting', 15_000);
    expect(await row(db.pool, a!)).toMatchObject({ kind_version: 2, locked_by: null, waiting_for: ['inbound_ticketed', 'return_ticketed'] });
    expect(worker.activeCount).toBe(0);
    expect(sim.ledger().filter((e) => e.kind === 'taxis')).toEqual([]);

    // a: inbound then return; b: return, return again (same sender id), then inbound.
    expect(await receiveSignal(db.pool, { bundleId: a!, name: 'inbound_ticketed', id: 'air-1' })).toMatchObject({ stored: true, woke: false, state: 'waiting' });
    expect(await receiveSignal(db.pool, { bundleId: b!, name: 'return_ticketed', id: 'air-2' })).toMatchObject({ stored: true, woke: false });
    expect(await receiveSignal(db.pool, { bundleId: b!, name: 'return_ticketed', id: 'air-2' })).toMatchObject({ stored: false, woke: false });
    await new Promise((r) => setTimeout(r, 300));
    expect(await state(db.pool, a!)).toBe('waiting');
    expect(await receiveSignal(db.pool, { bundleId: a!, name: 'return_ticketed', id: 'air-3' })).toMatchObject({ stored: true, woke: true, state: 'pending' });
    expect(await receiveSignal(db.pool, { bundleId: b!, name: 'inbound_ticketed' })).toMatchObject({ stored: true, woke: true });

    await waitFor('both completed', async () => (await state(db.pool, a!)) === 'completed' && (await state(db.pool, b!)) === 'completed', 15_000);
    expect(sim.ledger().filter((e) => e.kind === 'taxis')).toHaveLength(2);
    const timeline = await reasons(db.pool, b!);
    expect(timeline.filter((r) => r.startsWith('signal return_ticketed received'))).toHaveLength(1);
    expect(timeline).toContain('all signals received');
    expect(timeline.some((r) => r.startsWith('waiting for inbound_ticketed, return_ticketed until '))).toBe(true);
  });

  it('goes straight on when both signals arrived before the bundle reached its wait', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [id] = await enqueueV2(db.pool);
    await receiveSignal(db.pool, { bundleId: id!, name: 'return_ticketed' });
    await receiveSignal(db.pool, { bundleId: id!, name: 'inbound_ticketed' });
    expect(await state(db.pool, id!)).toBe('pending');
    startWorker(db.url, sim);
    await waitFor('completed', async () => (await state(db.pool, id!)) === 'completed', 15_000);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundle_history WHERE bundle_id = $1 AND to_state = 'waiting'`, [id]);
    expect(rows[0].n).toBe(0);
  });

  it('never misses a signal that races the agent entering its wait', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 5 });
    const ids = await enqueueV2(db.pool, 30);
    startWorker(db.url, sim, { concurrency: 30 });
    // Fire both signals for every bundle at a random moment around when its flights finish.
    await Promise.all(ids.map(async (id) => {
      await new Promise((r) => setTimeout(r, Math.random() * 150));
      await Promise.all(['inbound_ticketed', 'return_ticketed'].map((name) => receiveSignal(db.pool, { bundleId: id, name })));
    }));
    await waitFor('all completed', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed'`);
      return rows[0]!.n === ids.length;
    }, 20_000);
  });

  it('compensates a bundle whose wait passes its deadline with a signal missing, undoing every booking', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [id] = await enqueueV2(db.pool);
    startWorker(db.url, sim, { waitTimeoutSeconds: { vip: 1 } });
    await waitFor('waiting', async () => (await state(db.pool, id!)) === 'waiting', 15_000);
    await receiveSignal(db.pool, { bundleId: id!, name: 'inbound_ticketed' });
    await new Promise((r) => setTimeout(r, 1_100));
    const report = await runOnce(db.pool, { logger: quietLogger() });
    expect(report.waits).toBe(1);
    await waitFor('compensated', async () => (await state(db.pool, id!)) === 'compensated', 15_000);
    expect(sim.ledger().map((e) => [e.kind, e.status]).sort()).toEqual([['flights', 'cancelled'], ['flights', 'cancelled'], ['tickets', 'cancelled']]);
    const { rows } = await db.pool.query('SELECT last_error FROM bundles WHERE id = $1', [id]);
    expect(rows[0].last_error).toBe('timed out waiting for return_ticketed');
    // A late signal changes nothing.
    expect(await receiveSignal(db.pool, { bundleId: id!, name: 'return_ticketed' })).toMatchObject({ stored: true, woke: false, state: 'compensated' });
  });

  it('refuses a signal the bundle does not wait for, naming the ones it takes, and writes nothing', async () => {
    const db = await createTestDb();
    const [id] = await enqueueV2(db.pool);
    const err = await receiveSignal(db.pool, { bundleId: id!, name: 'taxi_arrived' }).catch((e) => e);
    expect(err).toBeInstanceOf(BadInput);
    expect(err.message).toMatch(/waits for no signal "taxi_arrived"; it takes inbound_ticketed, return_ticketed/);
    await expect(receiveSignal(db.pool, { bundleId: id!, name: 'Bad Name' })).rejects.toBeInstanceOf(BadInput);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM bundle_signals');
    expect(rows[0].n).toBe(0);
  });

  it('refuses a signal the bundle does not wait for without locking its row (a claim would skip a due bundle under that lock)', async () => {
    const db = await createTestDb();
    const [id] = await enqueueV2(db.pool);
    const holder = await db.pool.connect();
    onCleanup(async () => holder.release());
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM bundles WHERE id = $1 FOR NO KEY UPDATE', [id]);
    // Refused at once while another session holds the row: the check takes no lock of its own.
    const refused = await Promise.race([
      receiveSignal(db.pool, { bundleId: id!, name: 'taxi_arrived' }).catch((e: unknown) => e),
      new Promise((r) => setTimeout(() => r('blocked on the row lock'), 2_000)),
    ]);
    expect(refused).toBeInstanceOf(BadInput);
    await holder.query('ROLLBACK');
  });

  it('takes signals over HTTP: 201 stored, 200 for a repeat, 400 naming an unknown field or a bad id, writing nothing', async () => {
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger() });
    onCleanup(() => api.close(0));
    const [id] = await enqueueV2(db.pool);
    const post = (body: unknown) => fetch(`${api.url}/bundles/${id}/signals/inbound_ticketed`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    for (const [body, field] of [[{ id: 'x', colour: 'red' }, /colour: unknown field/], [{ id: '' }, /"id: must not be empty"/], [{ id: ' \t ' }, /"id: must not be blank/], [{ data: [1] }, /data: /]] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(JSON.stringify(await res.json())).toMatch(field);
    }
    expect((await db.pool.query('SELECT count(*)::int AS n FROM bundle_signals')).rows[0].n).toBe(0);
    expect((await post({ id: 'air-9', data: { ticket: '42' } })).status).toBe(201);
    expect((await post({ id: 'air-9', data: { ticket: '42' } })).status).toBe(200);
  });
});
