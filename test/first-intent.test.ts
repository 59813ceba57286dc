/**
 * The first intent in the claim (issue 12): a first attempt at booking records its first step's
 * intent in the claim's own statement, with the step's one key, after the claim in the timeline;
 * the agent then calls that provider without writing it again and without asking the provider
 * first (it is not an unknown outcome). A later attempt, an undo, and a kind whose first step
 * calls no provider are claimed as before. A worker that dies between the claim and the call
 * leaves an intent the next attempt settles by asking, as for any intent.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { agentDeps, claimAs, enqueueVip, simulatorUrls, startSimulator } from './support/fleet.js';
import { ProviderClient } from '../src/providers/client.js';
import type { ProviderExchange } from '../src/providers/exchange.js';
import type { ProviderSimulator } from '../src/providers/simulator.js';
import { runAgent } from '../src/agents/agent.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';
import { cancelBundle } from '../src/supervisor/operator.js';

const timeline = async (pool: pg.Pool, id: string) =>
  (await pool.query<{ reason: string; step: string | null; attempt: number }>('SELECT reason, step, attempt FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [id])).rows;
const steps = async (pool: pg.Pool, id: string) =>
  (await pool.query<{ position: number; name: string; status: string; idempotency_key: string; attempt: number }>('SELECT position, name, status, idempotency_key, attempt FROM steps WHERE bundle_id = $1 ORDER BY position', [id])).rows;

/** Agent deps whose provider client reports every HTTP exchange it makes (operation: book, cancel, lookup). */
function recordingDeps(pool: pg.Pool, sim: ProviderSimulator, workerId: string) {
  const exchanges: ProviderExchange[] = [];
  const deps = agentDeps(pool, sim, { workerId, leaseSeconds: 60, providers: new ProviderClient(simulatorUrls(sim), { timeoutMs: 2000, onExchange: (e) => exchanges.push(e) }) });
  return { deps, operations: () => exchanges.map((e) => e.operation) };
}

describe('the first intent in the claim', () => {
  it("is recorded by a first claim to book, with the step's key, after the claim in the timeline", async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const [claimed] = await claimAs(db.pool, { workerId: 'fi.1', limit: 1, leaseSeconds: 60 });
    expect(claimed!.first_intent_key).toBe(stepIdempotencyKey(id, 'show_tickets'));
    expect(await steps(db.pool, id)).toEqual([{ position: 0, name: 'show_tickets', status: 'booking', idempotency_key: stepIdempotencyKey(id, 'show_tickets'), attempt: 1 }]);
    expect(await timeline(db.pool, id)).toEqual([
      { reason: 'enqueued', step: null, attempt: 0 },
      { reason: 'claimed', step: null, attempt: 1 },
      { reason: 'booking', step: 'show_tickets', attempt: 1 },
    ]);
  });

  it('is used by the agent as its own: every step booked once, one intent per step, no lookup', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const [claimed] = await claimAs(db.pool, { workerId: 'fi.2', limit: 1, leaseSeconds: 60 });
    const { deps, operations } = recordingDeps(db.pool, sim, 'fi.2');
    expect(await runAgent(claimed!, deps)).toBe('completed');
    expect(sim.ledger().filter((e) => e.idempotency_key.startsWith(id)).map((e) => [e.idempotency_key, e.status])).toEqual(
      ['show_tickets', 'inbound_flight', 'return_flight', 'taxi'].map((s) => [stepIdempotencyKey(id, s), 'booked']),
    );
    const intents = (await timeline(db.pool, id)).filter((h) => h.reason === 'booking').map((h) => h.step);
    expect(intents).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
    expect(operations()).toEqual(['book', 'book', 'book', 'book']);
    expect((await steps(db.pool, id)).map((s) => s.status)).toEqual(['booked', 'booked', 'booked', 'booked']);
  });

  it('is not written for a later attempt, an undo, or a kind whose first step calls no provider', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [first, undone] = await enqueueVip(db.pool, 2);
    await enqueueBundles(db.pool, [{ payload: { n: 1 } }], { kind: 'noop' });
    // The first attempt of `first` dies after its claim (nothing else runs): the supervisor's reset, by hand.
    const claims = await claimAs(db.pool, { workerId: 'fi.3', limit: 3, leaseSeconds: 60 });
    expect(claims.map((c) => [c.kind, c.first_intent_key !== null]).sort()).toEqual([['noop', false], ['vip', true], ['vip', true]]);
    await db.pool.query(`UPDATE bundles SET state = 'pending', locked_by = NULL, locked_until = NULL WHERE id = $1`, [first!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET state = 'pending', locked_by = NULL, locked_until = NULL WHERE id = $1`, [undone!.vip_bundle_id]);
    await cancelBundle(db.pool, undone!.vip_bundle_id);

    const again = await claimAs(db.pool, { workerId: 'fi.4', limit: 2, leaseSeconds: 60 });
    expect(again.map((c) => [c.id, c.attempt, c.phase, c.first_intent_key]).sort()).toEqual(
      [[first!.vip_bundle_id, 2, 'book', null], [undone!.vip_bundle_id, 2, 'undo', null]].sort(),
    );
    // The retry finds the first attempt's intent and settles it by asking before it books.
    const retry = again.find((c) => c.id === first!.vip_bundle_id)!;
    const { deps, operations } = recordingDeps(db.pool, sim, 'fi.4');
    expect(await runAgent(retry, deps)).toBe('completed');
    expect(operations()).toEqual(['lookup', 'book', 'book', 'book', 'book']);
    expect(sim.ledger().filter((e) => e.idempotency_key.startsWith(first!.vip_bundle_id))).toHaveLength(4);
  });
});
