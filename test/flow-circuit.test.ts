/**
 * The circuit (issue 13): a run of transient failures (5xx, timeouts) pauses the provider kind
 * fleet-wide like a Retry-After does; after the pause one call probes it (half-open): a failure
 * opens it again at once, a success closes it.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { enqueueVip, quietLogger, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { FlowControl, ProviderParked } from '../src/agents/flow-control.js';
import { ProviderError } from '../src/errors.js';
import { createPool } from '../src/db/pool.js';

describe('--provider-circuit', () => {
  it('opens on a run of 5xx, parks other bundles on the paused kind, and closes after a good probe', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ failRate: 1 });
    // Two bundles, three tries each within their attempt: six 503s from tickets in a row.
    await enqueueVip(db.pool, 2);
    startWorker(db.url, sim, { providerRetries: 2, providerCircuit: { failures: 5, windowMs: 10_000, pauseMs: 2_000 } });
    await waitFor('the tickets circuit to open', async () => {
      const { rows } = await db.pool.query(`SELECT reason FROM provider_pauses WHERE kind = 'tickets' AND paused_until > now()`);
      return rows[0]?.reason === 'circuit open: 5 failures in a row within 10 s';
    }, 10_000);
    const opened = Date.now();
    const ticketCalls = () => sim.calls().filter((c) => c.kind === 'tickets').length;
    const before = ticketCalls();
    // A bundle arriving while it is open parks without calling tickets.
    const [late] = await enqueueVip(db.pool, 1);
    await waitFor('the late bundle to park on the open circuit', async () => {
      const { rows } = await db.pool.query(`SELECT parked_reason FROM bundles WHERE id = $1`, [late!.vip_bundle_id]);
      return rows[0].parked_reason !== null;
    }, 5_000);
    const { rows: [parked] } = await db.pool.query(`SELECT state, failure_count, parked_reason FROM bundles WHERE id = $1`, [late!.vip_bundle_id]);
    expect(parked).toMatchObject({ state: 'pending', failure_count: 0 });
    expect(parked.parked_reason).toMatch(/^tickets paused for \d\.\d s: circuit open: 5 failures in a row within 10 s$/);
    expect(ticketCalls()).toBe(before);

    // The provider recovers; after the pause the probe succeeds and the late bundle completes.
    sim.setFaults({ failRate: 0 });
    await waitFor('the late bundle to complete', async () => {
      const { rows } = await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [late!.vip_bundle_id]);
      return rows[0].state === 'completed';
    }, 15_000);
    const firstTicketAfter = sim.calls().filter((c) => c.kind === 'tickets' && c.at > opened)[0]!;
    expect(firstTicketAfter.at - opened).toBeGreaterThan(1_500);
  });

  it('half-open: after the pause one call probes; its failure opens the circuit again at once, a success closes it', async () => {
    const db = await createTestDb();
    const flow = new FlowControl({ pool: db.pool, limits: {}, holder: 'test', providerTimeoutMs: 1000, pauseRefreshMs: 0, circuit: { failures: 3, windowMs: 10_000, pauseMs: 400 }, logger: quietLogger() });
    let calls = 0;
    const failing = async () => {
      calls++;
      throw ProviderError.transient('tickets booking k: provider answered 503', 503);
    };
    for (let i = 0; i < 3; i++) await expect(flow.call('tickets', failing)).rejects.toMatchObject({ status: 503 });
    // Open: the next call is held back without reaching the provider.
    await expect(flow.call('tickets', failing)).rejects.toBeInstanceOf(ProviderParked);
    expect(calls).toBe(3);
    const { rows } = await db.pool.query(`SELECT reason FROM provider_pauses WHERE kind = 'tickets' AND paused_until > now()`);
    expect(rows).toEqual([{ reason: 'circuit open: 3 failures in a row within 10 s' }]);
    await new Promise((r) => setTimeout(r, 500));
    // Half-open: one probe goes out; it fails, and the circuit is open again at once.
    await expect(flow.call('tickets', failing)).rejects.toMatchObject({ status: 503 });
    expect(calls).toBe(4);
    await expect(flow.call('tickets', failing)).rejects.toBeInstanceOf(ProviderParked);
    await new Promise((r) => setTimeout(r, 500));
    // A good probe closes it: failures start counting from zero again.
    expect(await flow.call('tickets', async () => 'booked')).toBe('booked');
    await expect(flow.call('tickets', failing)).rejects.toMatchObject({ status: 503 });
    await expect(flow.call('tickets', failing)).rejects.toMatchObject({ status: 503 });
    expect(calls).toBe(6);
  });
});

describe('the pause read', () => {
  it('failing (database away) keeps the pauses known and lets the call through', async () => {
    const db = await createTestDb();
    const pool = createPool(db.url, { max: 1 });
    const flow = new FlowControl({ pool, limits: {}, holder: 'test', providerTimeoutMs: 1000, pauseRefreshMs: 0, logger: quietLogger() });
    flow.notePause('taxis', 60_000, 'taxis said 429, Retry-After 60 s');
    await pool.end();
    expect(await flow.call('tickets', async () => 'booked')).toBe('booked');
    await expect(flow.call('taxis', async () => 'booked')).rejects.toBeInstanceOf(ProviderParked);
  });
});
