/**
 * Invariant 1 through crashes, lost replies and shutdowns: a step whose outcome is unknown is
 * resolved by replaying the call with the same idempotency key, so each step is booked once.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { agentDeps, allInState, enqueueVip, simulatorUrls, startSimulator, startWorker, waitFor, claimAs } from './support/fleet.js';
import type { LedgerEntry, ProviderSimulator } from '../src/providers/simulator.js';
import type { ClaimedBundle } from '../src/scheduler/claim.js';
import { releaseBundles } from '../src/scheduler/release.js';
import { recordIntent } from '../src/agents/fenced-writes.js';
import { runAgent } from '../src/agents/agent.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';
import { ProviderClient } from '../src/providers/client.js';

async function claimOne(pool: pg.Pool, workerId: string): Promise<ClaimedBundle> {
  const claimed = await claimAs(pool, { workerId, limit: 1, leaseSeconds: 60 });
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

function ledgerOf(sim: ProviderSimulator, bundleId: string): LedgerEntry[] {
  return sim.ledger().filter((e) => e.idempotency_key.startsWith(`${bundleId}:`));
}

/** One live booking per step of the bundle, each under its own key, each matching the reference stored in `steps`. */
async function expectBookedOnce(pool: pg.Pool, sim: ProviderSimulator, bundleId: string): Promise<Map<string, LedgerEntry>> {
  const entries = ledgerOf(sim, bundleId);
  expect(entries.map((e) => e.kind).sort()).toEqual(['flights', 'flights', 'taxis', 'tickets']);
  expect(entries.every((e) => e.status === 'booked')).toBe(true);
  expect(new Set(entries.map((e) => e.idempotency_key)).size).toBe(4);
  const { rows: steps } = await pool.query<{ name: string; status: string; idempotency_key: string; reference: string }>(
    'SELECT name, status, idempotency_key, reference FROM steps WHERE bundle_id = $1 ORDER BY position',
    [bundleId],
  );
  expect(steps.map((s) => s.name)).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
  const byKey = new Map(entries.map((e) => [e.idempotency_key, e]));
  for (const s of steps) {
    expect(s.status).toBe('booked');
    expect(s.idempotency_key).toBe(stepIdempotencyKey(bundleId, s.name));
    expect(byKey.get(s.idempotency_key)?.reference).toBe(s.reference);
  }
  return byKey;
}

describe('recovery', () => {
  it('books a step once after a crash between its intent and its outcome', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;

    // Attempt 1 records the intent for show tickets and calls the provider, which books...
    const crashed = await claimOne(db.pool, 'crashed-worker');
    const key = stepIdempotencyKey(id, 'show_tickets');
    expect(await recordIntent(db.pool, { bundleId: id, attempt: crashed.attempt, actor: 'crashed-worker', leaseSeconds: 60 }, 0, 'show_tickets', key)).toBe(key);
    const p = crashed.payload as { show_id: string; customer_email: string; number_of_tickets: number };
    const client = new ProviderClient(simulatorUrls(sim));
    const first = await client.book('tickets', key, { show_id: p.show_id, booking_id: crashed.booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets });
    // ...and then the worker dies before recording the outcome. The bundle is handed back
    // (a release names the attempt it releases: any other is left alone).
    expect(await releaseBundles(db.pool, 'someone-else', [{ id, attempt: crashed.attempt + 1 }])).toEqual([]);
    expect(await releaseBundles(db.pool, 'crashed-worker', [{ id, attempt: crashed.attempt }])).toEqual([id]);
    const { rows: mid } = await db.pool.query('SELECT state FROM bundles WHERE id = $1', [id]);
    expect(mid[0].state).toBe('pending');
    const { rows: stepMid } = await db.pool.query('SELECT status, idempotency_key, reference FROM steps WHERE bundle_id = $1', [id]);
    expect(stepMid).toEqual([{ status: 'booking', idempotency_key: key, reference: null }]);

    startWorker(db.url, sim, { name: 'recovering' });
    await waitFor('bundle completed', () => allInState(db.pool, ['completed']));

    const { rows } = await db.pool.query('SELECT state, attempt FROM bundles WHERE id = $1', [id]);
    expect(rows[0]).toEqual({ state: 'completed', attempt: 2 });
    const byKey = await expectBookedOnce(db.pool, sim, id);
    const tickets = byKey.get(key)!;
    // The outcome was unknown: the successor asked the provider, found the booking and sent no second request.
    expect(tickets.book_calls).toBe(1);
    expect(tickets.reference).toBe(first.reference);
    for (const [k, e] of byKey) if (k !== key) expect(e.book_calls).toBe(1);
    const local = await db.pool.query('SELECT reference FROM tickets WHERE bundle_id = $1', [id]);
    expect(local.rows).toEqual([{ reference: first.reference }]);
  });

  it('replays the same key when a reply is lost after booking, and books once', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ lateRate: 1 });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const bundle = await claimOne(db.pool, 'w');

    const agent = runAgent(bundle, agentDeps(db.pool, sim, {
      providerRetries: 3,
      // Leaves the test ample time to end the fault between the lost reply and the retry.
      providerRetryMs: 1000,
    }));
    // The first booking is made but its reply is lost; then the provider answers again.
    await waitFor('the first booking', async () => ledgerOf(sim, id).length > 0, 10_000);
    sim.setFaults({ lateRate: 0 });
    expect(await agent).toBe('completed');

    const { rows } = await db.pool.query('SELECT state, attempt FROM bundles WHERE id = $1', [id]);
    expect(rows[0]).toEqual({ state: 'completed', attempt: 1 });
    const byKey = await expectBookedOnce(db.pool, sim, id);
    const tickets = byKey.get(stepIdempotencyKey(id, 'show_tickets'))!;
    expect(tickets.book_calls).toBe(2);
    const local = await db.pool.query('SELECT reference FROM tickets WHERE bundle_id = $1', [id]);
    expect(local.rows).toEqual([{ reference: tickets.reference }]);
  });

  it('releases in-flight bundles at shutdown, and another worker books each step once', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 1500 });
    const bundles = await enqueueVip(db.pool, 5);
    const worker = startWorker(db.url, sim, { concurrency: 5, name: 'stopping' });
    // All five agents are inside a provider call that has reached the provider (booked, reply pending).
    await waitFor(
      'five calls in flight',
      async () => {
        const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM steps WHERE status = 'booking'`);
        return rows[0]!.n === 5 && sim.ledger().length === 5;
      },
      10_000,
    );
    const stopped = await worker.stop(100);
    expect(stopped.released).toBe(5);

    const { rows } = await db.pool.query<{ id: string; state: string; locked_by: string | null; released: number }>(
      `SELECT b.id, b.state, b.locked_by,
              (SELECT count(*)::int FROM bundle_history h
               WHERE h.bundle_id = b.id AND h.reason = 'released at shutdown' AND h.from_state = 'running' AND h.to_state = 'pending' AND h.attempt = b.attempt) AS released
       FROM bundles b`,
    );
    expect(rows).toHaveLength(5);
    for (const r of rows) expect(r).toMatchObject({ state: 'pending', locked_by: null, released: 1 });

    sim.setFaults({ latencyMs: 0 });
    startWorker(db.url, sim, { concurrency: 5, name: 'successor' });
    await waitFor('all completed', () => allInState(db.pool, ['completed']));
    for (const b of bundles) await expectBookedOnce(db.pool, sim, b.vip_bundle_id);
    // The calls cut off at shutdown had booked; the successor found each booking by asking and replayed none.
    expect(sim.ledger().filter((e) => e.kind === 'tickets')).toHaveLength(5);
    expect(sim.ledger().every((e) => e.book_calls === 1)).toBe(true);
  });
});

describe("a provider's no while our own earlier try may still be at work there", () => {
  it('is not believed at once: the attempt fails as transient, and the next one finds the booking instead of compensating', async () => {
    const db = await createTestDb();
    // Bookings are slow (answered after 1.5 s), made only as they are answered, and a second
    // request with a key in flight gets 409 "in progress": the client's retry after its 0.5 s
    // timeout meets its own first request, and a lookup meanwhile finds nothing.
    const sim = await startSimulator({ slowRate: 1, hangMs: 1500, concurrentConflict: true, bookOnAnswer: true });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const first = await claimOne(db.pool, 'w1');
    expect(await runAgent(first, agentDeps(db.pool, sim, { workerId: 'w1', timeoutMs: 500, providerRetries: 2, providerRetryMs: 100 }))).toBe('failed');
    const { rows: [failed] } = await db.pool.query(`SELECT state, last_error_class, last_error FROM bundles WHERE id = $1`, [id]);
    expect(failed).toMatchObject({ state: 'failed', last_error_class: 'transient' });
    expect(failed.last_error).toMatch(/show_tickets: the provider said no \(.*in progress.*\) while an earlier try with key .* may still be at work there/);

    // The slow first request is answered and booked; the next attempt asks first and takes it.
    await waitFor('the first request to be booked', async () => ledgerOf(sim, id).some((e) => e.status === 'booked'), 5_000);
    sim.setFaults({ slowRate: 0 });
    await db.pool.query(`UPDATE bundles SET state = 'pending', next_run_at = now(), locked_by = NULL WHERE id = $1`, [id]);
    expect(await runAgent(await claimOne(db.pool, 'w2'), agentDeps(db.pool, sim, { workerId: 'w2' }))).toBe('completed');
    const ledger = ledgerOf(sim, id);
    expect(ledger.map((e) => [e.kind, e.status]).sort()).toEqual([['flights', 'booked'], ['flights', 'booked'], ['taxis', 'booked'], ['tickets', 'booked']]);
    expect(ledger.find((e) => e.kind === 'tickets')!.book_calls).toBe(1);
  });
  it("counts an earlier attempt's request too: a worker died with its slow booking still at work there, and the next attempt does not compensate", async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ slowRate: 1, hangMs: 1500, concurrentConflict: true, bookOnAnswer: true });
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    const key = stepIdempotencyKey(id, 'show_tickets');
    const first = await claimOne(db.pool, 'w1');
    await recordIntent(db.pool, { bundleId: id, attempt: first.attempt, actor: 'w1', leaseSeconds: 60 }, 0, 'show_tickets', key);
    // w1's request went out (answered, and booked, 1.5 s later); then w1 died and its bundle was reset.
    const p = first.payload as { show_id: string; customer_email: string; number_of_tickets: number };
    const w1Request = new ProviderClient(simulatorUrls(sim), { timeoutMs: 5_000 })
      .book('tickets', key, { show_id: p.show_id, booking_id: b!.booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets })
      .catch(() => undefined);
    await waitFor("w1's request to reach the provider", async () => sim.calls().length > 0, 5_000);
    const reset = `UPDATE bundles SET state = 'pending', next_run_at = now(), locked_by = NULL, locked_until = NULL WHERE id = $1`;
    await db.pool.query(reset, [id]);
    // w2 asks first (nothing held yet), books, and meets w1's request: 409 "in progress".
    expect(await runAgent(await claimOne(db.pool, 'w2'), agentDeps(db.pool, sim, { workerId: 'w2', timeoutMs: 500, providerRetries: 0 }))).toBe('failed');
    const { rows: [failed] } = await db.pool.query(`SELECT state, last_error_class FROM bundles WHERE id = $1`, [id]);
    expect(failed).toEqual({ state: 'failed', last_error_class: 'transient' });

    await w1Request;
    sim.setFaults({ slowRate: 0 });
    await db.pool.query(reset, [id]);
    expect(await runAgent(await claimOne(db.pool, 'w3'), agentDeps(db.pool, sim, { workerId: 'w3' }))).toBe('completed');
    expect(ledgerOf(sim, id).find((e) => e.kind === 'tickets')).toMatchObject({ status: 'booked', book_calls: 1 });
  });
});
