/**
 * Invariant 3: a stale agent cannot overwrite a newer attempt. Every agent write is fenced on
 * (bundle id, attempt, state running); once a newer attempt owns the bundle, the old agent's
 * writes report "fenced" and change nothing, and a real agent stops.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { agentDeps, enqueueVip, startSimulator, waitFor, claimAs } from './support/fleet.js';
import type { ClaimedBundle } from '../src/scheduler/claim.js';
import { recordBooked, recordCancelled, recordFailure, recordIntent, writeSteps, writtenKey, type Fence } from '../src/agents/fenced-writes.js';
import { StepWriter } from '../src/agents/step-writer.js';
import { finishBundles, Finisher } from '../src/agents/finisher.js';
import { runAgent } from '../src/agents/agent.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';

/** Everything an agent's write could touch for one bundle, to compare before and after. */
async function snapshot(pool: pg.Pool, id: string) {
  const [bundle, steps, history, tickets, events] = await Promise.all([
    pool.query('SELECT * FROM bundles WHERE id = $1', [id]),
    pool.query('SELECT * FROM steps WHERE bundle_id = $1 ORDER BY position', [id]),
    pool.query('SELECT * FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [id]),
    pool.query('SELECT * FROM tickets WHERE bundle_id = $1', [id]),
    pool.query(`SELECT name FROM pgboss.job WHERE data->'header'->>'correlation_id' = $1 ORDER BY name`, [id]),
  ]);
  return { bundle: bundle.rows, steps: steps.rows, history: history.rows, tickets: tickets.rows, events: events.rows };
}

async function claimOne(pool: pg.Pool, workerId: string): Promise<ClaimedBundle> {
  const claimed = await claimAs(pool, { workerId, limit: 1, leaseSeconds: 60 });
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

/** What the supervisor or a release does: the old attempt loses the bundle, and a new claim takes it. */
async function supersede(pool: pg.Pool, id: string, newOwner: string): Promise<ClaimedBundle> {
  await pool.query(`UPDATE bundles SET state = 'pending', locked_by = NULL, locked_until = NULL, next_run_at = now() WHERE id = $1`, [id]);
  return claimOne(pool, newOwner);
}

describe('fencing on attempt', () => {
  it('fences each row of a batched step write on its own: a stale row changes nothing, the current one is written', async () => {
    const db = await createTestDb();
    const [a, b] = await enqueueVip(db.pool, 2);
    const first = await claimOne(db.pool, 'w');
    const second = await claimOne(db.pool, 'w');
    const staleFence: Fence = { bundleId: first.id, attempt: first.attempt, actor: 'w', leaseSeconds: 60 };
    const liveFence: Fence = { bundleId: second.id, attempt: second.attempt, actor: 'w', leaseSeconds: 60 };
    await supersede(db.pool, first.id, 'other');
    const before = await snapshot(db.pool, first.id);
    const written = await writeSteps(db.pool, [
      { fence: staleFence, position: 0, name: 'show_tickets', key: stepIdempotencyKey(first.id, 'show_tickets'), status: 'booking', reference: null },
      { fence: liveFence, position: 0, name: 'show_tickets', key: stepIdempotencyKey(second.id, 'show_tickets'), status: 'booking', reference: null },
    ]);
    expect([...written.written.keys()]).toEqual([writtenKey(second.id, 0)]);
    expect(await snapshot(db.pool, first.id)).toEqual(before);
    // The same through the group-commit writer the worker uses.
    const writer = new StepWriter(db.pool);
    const [stale, live] = await Promise.all([
      writer.booked(staleFence, { position: 0, name: 'show_tickets', key: stepIdempotencyKey(first.id, 'show_tickets'), reference: 'TKT-STALE' }),
      writer.booked(liveFence, { position: 0, name: 'show_tickets', key: stepIdempotencyKey(second.id, 'show_tickets'), reference: 'TKT-LIVE' }),
    ]);
    expect([stale, live]).toEqual([false, true]);
    expect(await snapshot(db.pool, first.id)).toEqual(before);
    const { rows } = await db.pool.query('SELECT status, reference FROM steps WHERE bundle_id = $1', [second.id]);
    expect(rows).toEqual([{ status: 'booked', reference: 'TKT-LIVE' }]);
    expect([a!.vip_bundle_id, b!.vip_bundle_id].sort()).toEqual([first.id, second.id].sort());
  });

  it("writes a step's outcome and the next step's intent together: both or neither, the outcome first in the timeline", async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 2);
    const live = await claimOne(db.pool, 'w');
    const stale = await claimOne(db.pool, 'w');
    const fenceOf = (b: { id: string; attempt: number }): Fence => ({ bundleId: b.id, attempt: b.attempt, actor: 'w', leaseSeconds: 60 });
    const key = (id: string, step: string) => stepIdempotencyKey(id, step);
    const writer = new StepWriter(db.pool);
    for (const b of [live, stale]) expect(await writer.intent(fenceOf(b), 0, 'show_tickets', key(b.id, 'show_tickets'))).toBe(key(b.id, 'show_tickets'));
    await supersede(db.pool, stale.id, 'other');
    const before = await snapshot(db.pool, stale.id);

    const booked = (id: string) => ({ position: 0, name: 'show_tickets', key: key(id, 'show_tickets'), reference: `TKT-${id.slice(0, 4)}`, local: 'tickets' as const });
    const [liveKey, staleKey] = await Promise.all([
      writer.intent(fenceOf(live), 1, 'inbound_flight', key(live.id, 'inbound_flight'), booked(live.id)),
      writer.intent(fenceOf(stale), 1, 'inbound_flight', key(stale.id, 'inbound_flight'), booked(stale.id)),
    ]);
    expect(liveKey).toBe(key(live.id, 'inbound_flight'));
    expect(staleKey).toBeNull();
    expect(await snapshot(db.pool, stale.id)).toEqual(before);

    const { rows: steps } = await db.pool.query('SELECT position, status, reference FROM steps WHERE bundle_id = $1 ORDER BY position', [live.id]);
    expect(steps).toEqual([
      { position: 0, status: 'booked', reference: booked(live.id).reference },
      { position: 1, status: 'booking', reference: null },
    ]);
    const { rows: tickets } = await db.pool.query('SELECT reference FROM tickets WHERE bundle_id = $1', [live.id]);
    expect(tickets).toEqual([{ reference: booked(live.id).reference }]);
    const { rows: timeline } = await db.pool.query(`SELECT step, reason FROM bundle_history WHERE bundle_id = $1 AND from_state = 'running' AND to_state = 'running' ORDER BY id`, [live.id]);
    expect(timeline).toEqual([
      { step: 'show_tickets', reason: 'booking' },
      { step: 'show_tickets', reason: `booked ${booked(live.id).reference}` },
      { step: 'inbound_flight', reason: 'booking' },
    ]);
  });

  it('turns every write of a superseded attempt into a no-op', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const old = await claimOne(db.pool, 'old-worker');
    expect(old.attempt).toBe(1);
    const oldFence: Fence = { bundleId: id, attempt: 1, actor: 'old-worker', leaseSeconds: 60 };
    const keys = ['show_tickets', 'inbound_flight', 'return_flight', 'taxi'].map((s) => stepIdempotencyKey(id, s));

    // The old attempt got as far as booking the first step and starting the second.
    expect(await recordIntent(db.pool, oldFence, 0, 'show_tickets', keys[0]!)).toBe(keys[0]);
    expect(await recordBooked(db.pool, oldFence, 0, 'show_tickets', keys[0]!, 'TKT-OLD')).toBe(true);
    expect(await recordIntent(db.pool, oldFence, 1, 'inbound_flight', keys[1]!)).toBe(keys[1]);

    // A newer attempt takes over (still running: only the attempt number tells them apart) and makes progress.
    const current = await supersede(db.pool, id, 'new-worker');
    expect(current.attempt).toBe(2);
    const newFence: Fence = { bundleId: id, attempt: 2, actor: 'new-worker', leaseSeconds: 60 };
    expect(await recordIntent(db.pool, newFence, 1, 'inbound_flight', keys[1]!)).toBe(keys[1]);

    const before = await snapshot(db.pool, id);
    expect(before.bundle[0]).toMatchObject({ state: 'running', attempt: 2, locked_by: 'new-worker' });

    // Every kind of write the old agent could still try.
    expect(await recordIntent(db.pool, oldFence, 2, 'return_flight', keys[2]!)).toBeNull();
    expect(await recordIntent(db.pool, oldFence, 1, 'inbound_flight', keys[1]!)).toBeNull();
    expect(await recordBooked(db.pool, oldFence, 1, 'inbound_flight', keys[1]!, 'FLT-OLD')).toBe(false);
    expect(await recordBooked(db.pool, oldFence, 3, 'taxi', keys[3]!, 'TAX-OLD')).toBe(false);
    expect(await recordCancelled(db.pool, oldFence, 0, 'show_tickets')).toBe(false);
    expect(await recordFailure(db.pool, oldFence, { step: 'inbound_flight', position: 1, errorClass: 'permanent', message: 'sold out' })).toBe(false);
    expect(await recordFailure(db.pool, oldFence, { step: 'inbound_flight', position: 1, errorClass: 'transient', message: 'timeout' })).toBe(false);
    const finished = await finishBundles(db.pool, [
      { bundleId: id, attempt: 1, kind: 'vip', actor: 'old-worker', outcome: 'completed', lastStep: { position: 3, name: 'taxi', key: keys[3]!, reference: 'TAX-OLD' } },
    ]);
    expect(finished.finished.size).toBe(0);
    expect(await new Finisher(db.pool).finish({ bundleId: id, attempt: 1, kind: 'vip', actor: 'old-worker', outcome: 'completed' })).toBe(false);

    const after = await snapshot(db.pool, id);
    expect(after).toEqual(before);
  });

  it('fences a stale undo and a stale compensation finish too', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const key = stepIdempotencyKey(id, 'show_tickets');
    await claimOne(db.pool, 'booker');
    expect(await recordIntent(db.pool, { bundleId: id, attempt: 1, actor: 'booker', leaseSeconds: 60 }, 0, 'show_tickets', key)).toBe(key);
    // The bundle goes to compensating; an undo attempt (2) is superseded by another (3).
    await db.pool.query(`UPDATE bundles SET state = 'compensating', locked_by = NULL, locked_until = NULL WHERE id = $1`, [id]);
    const undo = await claimOne(db.pool, 'undoer-old');
    expect(undo).toMatchObject({ phase: 'undo', attempt: 2 });
    await db.pool.query(`UPDATE bundles SET state = 'compensating', locked_by = NULL, locked_until = NULL WHERE id = $1`, [id]);
    expect((await claimOne(db.pool, 'undoer-new')).attempt).toBe(3);

    const before = await snapshot(db.pool, id);
    const stale: Fence = { bundleId: id, attempt: 2, actor: 'undoer-old', leaseSeconds: 60 };
    expect(await recordCancelled(db.pool, stale, 0, 'show_tickets')).toBe(false);
    expect(await recordFailure(db.pool, stale, { step: 'show_tickets', position: 0, errorClass: 'transient', message: 'cancel timed out' })).toBe(false);
    expect((await finishBundles(db.pool, [{ bundleId: id, attempt: 2, kind: 'vip', actor: 'undoer-old', outcome: 'compensated' }])).finished.size).toBe(0);
    expect(await snapshot(db.pool, id)).toEqual(before);
  });

  it('stops a real agent whose bundle was superseded while a provider call was in flight', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 1000 });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const old = await claimOne(db.pool, 'old-worker');

    const agent = runAgent(old, agentDeps(db.pool, sim, { timeoutMs: 5000, workerId: 'old-worker' }));

    // Wait until the agent is inside its second step's provider call (intent recorded, reply not yet in).
    const inFlight = async () => {
      const { rows } = await db.pool.query(`SELECT status FROM steps WHERE bundle_id = $1 AND position = 1`, [id]);
      return rows[0]?.status === 'booking';
    };
    await waitFor('the agent to be calling the flights provider', inFlight, 10_000);
    const current = await supersede(db.pool, id, 'new-worker');
    expect(current.attempt).toBe(2);
    const before = await snapshot(db.pool, id);

    expect(await agent).toBe('fenced');
    const after = await snapshot(db.pool, id);
    expect(after).toEqual(before);
    expect(after.bundle[0]).toMatchObject({ state: 'running', attempt: 2, locked_by: 'new-worker' });
    expect(after.steps.map((s) => [s.position, s.status])).toEqual([[0, 'booked'], [1, 'booking']]);
    // The stale agent made no further provider call after it was fenced out.
    await new Promise((r) => setTimeout(r, 300));
    expect(sim.ledger().map((e) => e.kind).sort()).toEqual(['flights', 'tickets']);
  });
});
