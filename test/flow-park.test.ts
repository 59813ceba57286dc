/**
 * 429/503 with Retry-After (issue 13): the step is not retried inside the attempt; the bundle is
 * parked until then (pending, no worker held, no failure counted), the provider kind is paused
 * fleet-wide so other bundles park instead of calling it, and everything completes after the window.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { claimAs, enqueueVip, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { parkBundle } from '../src/agents/park.js';
import { cli } from './support/processes.js';
import { parseRetryAfter, ProviderClient } from '../src/providers/client.js';
import { ProviderError } from '../src/errors.js';

describe('Retry-After', () => {
  it('is read as delta-seconds or an HTTP-date, and ignored when unreadable', () => {
    const now = Date.parse('2026-11-24T07:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Tue, 24 Nov 2026 07:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Tue, 24 Nov 2026 06:59:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('999999', now)).toBe(3_600_000);
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-1', now)).toBeUndefined();
  });

  it('a 429 from the simulator carries retryAfterMs on the ProviderError', async () => {
    const sim = await startSimulator({ rateLimit: 1, rateLimitRetryAfter: 7 });
    const client = new ProviderClient({ tickets: sim.url, flights: sim.url, taxis: sim.url });
    await client.lookup('flights', 'k1');
    const err = await client.lookup('flights', 'k2').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).status).toBe(429);
    expect((err as ProviderError).retryAfterMs).toBe(7000);
    expect(sim.calls().map((c) => c.limited)).toEqual([false, true]);
  });
});

describe('a 429 with Retry-After', () => {
  it('parks the bundle without a failure or a held worker, pauses the kind for other bundles, and completes after the window', async () => {
    const db = await createTestDb();
    // One flights request per second, and a 429 asks for 8 s: the return flight (right after the inbound one) gets it.
    const sim = await startSimulator({ rateLimit: 1, rateLimitRetryAfter: 8 });
    const [a] = await enqueueVip(db.pool, 1);
    const worker = startWorker(db.url, sim, { providerRetries: 3 });
    await waitFor('bundle A to be parked', async () => {
      const { rows } = await db.pool.query(`SELECT state, parked_until FROM bundles WHERE id = $1`, [a!.vip_bundle_id]);
      return rows[0].state === 'pending' && rows[0].parked_until !== null;
    }, 10_000);
    const parkedAt = Date.now();
    const { rows: [parked] } = await db.pool.query(
      `SELECT failure_count, attempt, parked_reason, parked_provider, extract(epoch FROM parked_until - now()) AS left_s, next_run_at = parked_until AS same FROM bundles WHERE id = $1`,
      [a!.vip_bundle_id],
    );
    expect(parked).toMatchObject({ failure_count: 0, attempt: 1, parked_reason: 'flights said 429, Retry-After 8 s', parked_provider: 'flights', same: true });
    expect(Number(parked.left_s)).toBeGreaterThan(6);
    // Not retried inside the attempt: exactly one 429 for flights, although the worker would retry 3 times.
    expect(sim.calls().filter((c) => c.kind === 'flights' && c.limited)).toHaveLength(1);
    await waitFor('the worker to hold no agent', async () => worker.activeCount === 0, 2_000);
    const { rows: pause } = await db.pool.query(`SELECT kind, reason FROM provider_pauses WHERE paused_until > now()`);
    expect(pause).toEqual([{ kind: 'flights', reason: 'flights said 429, Retry-After 8 s' }]);

    // Another bundle books its tickets, then parks on the paused kind without calling it (the
    // simulator would now answer: only the pause keeps it away).
    sim.setRateLimit(undefined);
    const flightsBefore = sim.calls().filter((c) => c.kind === 'flights').length;
    const [b] = await enqueueVip(db.pool, 1);
    await waitFor('bundle B to park on the paused kind', async () => {
      const { rows } = await db.pool.query(`SELECT state, parked_reason FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);
      return rows[0].state === 'pending' && rows[0].parked_reason !== null;
    }, 5_000);
    const { rows: [bRow] } = await db.pool.query(`SELECT failure_count, parked_reason, parked_until >= (SELECT paused_until FROM provider_pauses WHERE kind = 'flights') - interval '10 ms' AS to_end FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);
    expect(bRow.failure_count).toBe(0);
    expect(bRow.parked_reason).toMatch(/^flights paused for \d\.\d s: flights said 429, Retry-After 8 s$/);
    expect(bRow.to_end).toBe(true);
    expect(Date.now() - parkedAt).toBeLessThan(4_000); // still inside the window
    expect(sim.calls().filter((c) => c.kind === 'flights').length).toBe(flightsBefore);

    // inspect (JSON and text) says why it waits.
    const shown = await cli(db.url, ['inspect', a!.vip_bundle_id, '--json']);
    expect(JSON.parse(shown.stdout).parked).toMatchObject({ provider: 'flights', reason: 'flights said 429, Retry-After 8 s' });
    const text = await cli(db.url, ['inspect', a!.vip_bundle_id]);
    expect(text.stdout).toMatch(/parked until \S+ .*: flights said 429, Retry-After 8 s/);
    expect(text.stdout).toContain('parked: flights said 429, Retry-After 8 s');

    await waitFor('both bundles to complete after the window', async () => {
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed' AND failure_count = 0`);
      return rows[0].n === 2;
    }, 20_000);
    // No flights request went out during the pause.
    const firstAfter = sim.calls().filter((c) => c.kind === 'flights' && c.at > parkedAt)[0]!;
    expect(firstAfter.at - parkedAt).toBeGreaterThan(7_000);
    const { rows: history } = await db.pool.query(`SELECT reason FROM bundle_history WHERE bundle_id = $1 ORDER BY id`, [a!.vip_bundle_id]);
    expect(history.map((h) => h.reason)).toContain('parked: flights said 429, Retry-After 8 s');
    expect(history.map((h) => h.reason)).not.toContain('attempt failed (transient)');
  });
});

describe('a 429 with Retry-After: 0', () => {
  it('parks for at least a second, so a provider that keeps saying "now" is not called in a tight loop', async () => {
    const db = await createTestDb();
    // Two flights requests per second: the two inbound flights take them, and both return flights are
    // told "retry now" (a retry is a lookup and then the booking: two requests again).
    const sim = await startSimulator({ rateLimit: 2, rateLimitRetryAfter: 0 });
    const bundles = await enqueueVip(db.pool, 2);
    startWorker(db.url, sim, { providerRetries: 3 });
    await waitFor('both bundles to complete', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed' AND failure_count = 0`);
      return rows[0]!.n === 2;
    }, 15_000);
    // With a zero window a parked bundle was claimed and the provider called again at once, over
    // and over until the simulator's second had passed (hundreds of 429s; with 1 request/s, the
    // bundle never completed). Parked for at least 1 s, each asks again once per window.
    const limited = sim.calls().filter((c) => c.kind === 'flights' && c.limited);
    expect(limited.length).toBeGreaterThanOrEqual(2);
    expect(limited.length).toBeLessThanOrEqual(8);
    const { rows: history } = await db.pool.query(`SELECT reason FROM bundle_history WHERE bundle_id = $1 AND reason LIKE 'parked:%' ORDER BY id`, [bundles[0]!.vip_bundle_id]);
    expect(history[0].reason).toBe('parked: flights said 429, Retry-After 0 s (waiting 1 s at least)');
  });
});

describe('parking while undoing', () => {
  it('sends the bundle back to compensating, with no undo failure counted, and is fenced on the attempt', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET state = 'compensating' WHERE id = $1`, [b!.vip_bundle_id]);
    const [claimed] = await claimAs(db.pool, { workerId: 'undoer', limit: 1, leaseSeconds: 60 });
    expect(claimed).toMatchObject({ phase: 'undo' });
    const fence = { bundleId: claimed!.id, attempt: claimed!.attempt, actor: 'undoer', leaseSeconds: 60 };
    const park = { kind: 'taxis' as const, delayMs: 4_000, reason: 'taxis said 503, Retry-After 4 s', pauseKind: true };
    // A stale attempt is fenced out (the kind is paused all the same: the provider said so).
    expect(await parkBundle(db.pool, { ...fence, attempt: fence.attempt - 1 }, 'taxi', park)).toBe(false);
    expect(await parkBundle(db.pool, fence, 'taxi', park)).toBe(true);
    const { rows: [row] } = await db.pool.query(
      `SELECT state, phase, failure_count, undo_failure_count, locked_by, parked_reason, next_run_at = parked_until AS same,
              extract(epoch FROM parked_until - now()) AS left_s FROM bundles WHERE id = $1`,
      [b!.vip_bundle_id],
    );
    expect(row).toMatchObject({ state: 'compensating', phase: 'undo', failure_count: 0, undo_failure_count: 0, locked_by: null, parked_reason: 'taxis said 503, Retry-After 4 s', same: true });
    expect(Number(row.left_s)).toBeGreaterThan(3.5);
    expect(Number(row.left_s)).toBeLessThanOrEqual(5); // the window plus at most 1 s of spread
    const { rows: pauses } = await db.pool.query(`SELECT kind, extract(epoch FROM paused_until - now()) AS left_s FROM provider_pauses`);
    expect(pauses).toHaveLength(1);
    expect(Number(pauses[0].left_s)).toBeLessThanOrEqual(4);
    const { rows: history } = await db.pool.query(`SELECT from_state, to_state, step, reason FROM bundle_history WHERE bundle_id = $1 ORDER BY id DESC LIMIT 1`, [b!.vip_bundle_id]);
    expect(history[0]).toEqual({ from_state: 'running', to_state: 'compensating', step: 'taxi', reason: 'parked: taxis said 503, Retry-After 4 s' });
  });
});
