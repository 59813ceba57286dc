/**
 * Issue 9: what a stale (superseded, slow or paused) agent may still do, and why it changes
 * nothing. Invariants 3 (fencing), 8 (nothing left booked for an undone bundle) and 9 (no provider
 * call past the lease).
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { agentDeps, enqueueVip, simulatorUrls, startSimulator, waitFor, claimAs } from './support/fleet.js';
import type { ClaimedBundle } from '../src/scheduler/claim.js';
import { recordIntent } from '../src/agents/fenced-writes.js';
import { Finisher } from '../src/agents/finisher.js';
import { runAgent } from '../src/agents/agent.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';
import { cancelBundle } from '../src/supervisor/operator.js';
import { ProviderClient } from '../src/providers/client.js';

async function claimOne(pool: pg.Pool, workerId: string, leaseSeconds = 60): Promise<ClaimedBundle> {
  const claimed = await claimAs(pool, { workerId, limit: 1, leaseSeconds });
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

async function stepStatus(pool: pg.Pool, id: string, position: number): Promise<string | undefined> {
  const { rows } = await pool.query('SELECT status FROM steps WHERE bundle_id = $1 AND position = $2', [id, position]);
  return rows[0]?.status;
}

describe('stale agents', () => {
  it('a stale agent whose tickets reply arrives after the bundle was compensated writes no tickets row', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 1500 });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const old = await claimOne(db.pool, 'slow-worker');
    const oldAgent = runAgent(old, agentDeps(db.pool, sim, { workerId: 'slow-worker', timeoutMs: 5000 }));
    // The tickets call has reached the provider (it books at once and answers after 1.5 s)...
    await waitFor('the tickets booking at the provider', async () => sim.ledger().length === 1, 10_000);
    sim.setFaults({ latencyMs: 0 });
    // ...when an operator cancels and an undo agent compensates, before the old reply arrives.
    await cancelBundle(db.pool, id);
    const undo = await claimOne(db.pool, 'undoer');
    expect(undo.phase).toBe('undo');
    expect(await runAgent(undo, agentDeps(db.pool, sim, { workerId: 'undoer' }))).toBe('compensated');

    expect(await oldAgent).toBe('fenced');
    const { rows: tickets } = await db.pool.query('SELECT * FROM tickets WHERE bundle_id = $1', [id]);
    expect(tickets).toEqual([]);
    const { rows: bundle } = await db.pool.query('SELECT state FROM bundles WHERE id = $1', [id]);
    expect(bundle[0].state).toBe('compensated');
    expect(sim.ledger()).toMatchObject([{ kind: 'tickets', status: 'cancelled' }]);
  });

  it('the Finisher tells a stale attempt it was fenced out when it shares a batch with the current one', async () => {
    const db = await createTestDb();
    const [a, b] = await enqueueVip(db.pool, 2);
    await claimAs(db.pool, { workerId: 'w', limit: 2, leaseSeconds: 60 });
    // Bundle b's attempt 1 was superseded by attempt 2 (still running).
    await db.pool.query(`UPDATE bundles SET state = 'pending', next_run_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    const current = await claimOne(db.pool, 'w2');
    expect(current).toMatchObject({ id: b!.vip_bundle_id, attempt: 2 });

    const finisher = new Finisher(db.pool);
    // The first finish occupies the writer; the next two queue up and go in one statement.
    const first = finisher.finish({ bundleId: a!.vip_bundle_id, attempt: 1, kind: 'noop', actor: 'w', outcome: 'completed' });
    const stale = finisher.finish({ bundleId: b!.vip_bundle_id, attempt: 1, kind: 'noop', actor: 'w', outcome: 'completed' });
    const live = finisher.finish({ bundleId: b!.vip_bundle_id, attempt: 2, kind: 'noop', actor: 'w2', outcome: 'completed' });
    expect(await Promise.all([first, stale, live])).toEqual([true, false, true]);
  });

  it('undo cancels a step marked failed: a 409 may have answered a concurrent request while another booked', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const booker = await claimOne(db.pool, 'booker');
    const key = stepIdempotencyKey(id, 'show_tickets');
    expect(await recordIntent(db.pool, { bundleId: id, attempt: booker.attempt, actor: 'booker', leaseSeconds: 60 }, 0, 'show_tickets', key)).toBe(key);
    // A zombie's request booked the key; this attempt's own request was answered 409 and the step marked failed.
    const p = booker.payload as { show_id: string; customer_email: string; number_of_tickets: number };
    await new ProviderClient(simulatorUrls(sim)).book('tickets', key, { show_id: p.show_id, booking_id: booker.booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets });
    await db.pool.query(`UPDATE steps SET status = 'failed' WHERE bundle_id = $1`, [id]);
    await db.pool.query(`UPDATE bundles SET state = 'compensating', locked_by = NULL, locked_until = NULL WHERE id = $1`, [id]);

    const undo = await claimOne(db.pool, 'undoer');
    expect(await runAgent(undo, agentDeps(db.pool, sim, { workerId: 'undoer' }))).toBe('compensated');
    expect(sim.ledger()).toMatchObject([{ idempotency_key: key, status: 'cancelled' }]);
  });

  it('an agent makes no provider call, first or retry, once its lease deadline may have passed', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ failRate: 1 });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const claimed = await claimOne(db.pool, 'zombie', 2);
    const started = Date.now();
    // Retries at about 0, 0.2, 0.6, 1.4, 2.4, 3.4 s; each request may take 0.5 s, so none may start after 1.5 s.
    const agent = runAgent(claimed, agentDeps(db.pool, sim, { workerId: 'zombie', leaseSeconds: 2, timeoutMs: 500, providerRetries: 8, providerRetryMs: 200 }));
    await new Promise((r) => setTimeout(r, 2000 - (Date.now() - started)));
    // The provider recovers after the lease has run out: a retry now would book.
    sim.setFaults({ failRate: 0 });
    const outcome = await agent;
    expect(['failed', 'fenced']).toContain(outcome);
    expect(sim.ledger().filter((e) => e.idempotency_key === stepIdempotencyKey(id, 'show_tickets'))).toEqual([]);
    expect(await stepStatus(db.pool, id, 0)).toBe('booking');
  });
});
