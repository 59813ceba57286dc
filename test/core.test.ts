/** The core path on real PostgreSQL: enqueue → claim → four bookings → completed. */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { allInState, enqueueVip, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { inspectBundle } from '../src/bundles/read.js';

describe('booking bundles end to end', () => {
  it('books many bundles through two workers, each with exactly four live bookings', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const bundles = await enqueueVip(db.pool, 60);
    startWorker(db.url, sim, { concurrency: 8, name: 'w1' });
    startWorker(db.url, sim, { concurrency: 8, name: 'w2' });
    await waitFor('all bundles completed', () => allInState(db.pool, ['completed']));

    const ledger = sim.ledger();
    for (const b of bundles) {
      const live = ledger.filter((e) => e.idempotency_key.startsWith(b.vip_bundle_id) && e.status === 'booked');
      expect(live.map((e) => e.kind).sort()).toEqual(['flights', 'flights', 'taxis', 'tickets']);
    }
    // Both workers took part, and no key was booked under two references.
    const { rows } = await db.pool.query(`SELECT DISTINCT split_part(actor, '.', 1) AS w FROM bundle_history WHERE reason = 'claimed'`);
    expect(rows.map((r) => r.w).sort()).toEqual(['w1', 'w2']);
    expect(new Set(ledger.map((e) => e.idempotency_key)).size).toBe(ledger.length);
  });

  it('shows a completed bundle with its steps and timeline in inspect', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    startWorker(db.url, sim);
    await waitFor('completed', () => allInState(db.pool, ['completed']));
    const view = await inspectBundle(db.pool, b!.booking_id);
    expect(view.vip_bundle_id).toBe(b!.vip_bundle_id);
    expect(view.state).toBe('completed');
    expect(view.attempt).toBe(1);
    expect(view.steps.map((s) => [s.name, s.status])).toEqual([
      ['show_tickets', 'booked'],
      ['inbound_flight', 'booked'],
      ['return_flight', 'booked'],
      ['taxi', 'booked'],
    ]);
    expect(view.steps.every((s) => s.reference)).toBe(true);
    expect(view.history[0]).toMatchObject({ actor: 'enqueue', attempt: 0, from_state: null, to_state: 'pending', reason: 'enqueued', at: view.created_at });
    expect(view.history.filter((h) => h.reason === 'enqueued')).toHaveLength(1);
    expect(view.history[1]).toMatchObject({ from_state: 'pending', to_state: 'running', reason: 'claimed' });
    expect(view.history.at(-1)).toMatchObject({ from_state: 'running', to_state: 'completed' });
    // The local tickets record exists for the show tickets step.
    const { rows } = await db.pool.query('SELECT reference FROM tickets WHERE booking_id = $1', [b!.booking_id]);
    expect(rows).toHaveLength(1);
  });

  it("shows a bundle enqueued before migration 010 (its enqueue a history row, no enqueued_by) with one 'enqueued' entry", async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET enqueued_by = NULL WHERE id = $1`, [b!.vip_bundle_id]);
    await db.pool.query(`INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason) VALUES ($1, 'cli', 0, NULL, 'pending', 'enqueued')`, [b!.vip_bundle_id]);
    const view = await inspectBundle(db.pool, b!.vip_bundle_id);
    expect(view.history).toEqual([expect.objectContaining({ actor: 'cli', to_state: 'pending', reason: 'enqueued' })]);
  });
});
