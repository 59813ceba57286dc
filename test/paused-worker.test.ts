/**
 * Invariant 9 against a real paused process: a worker SIGSTOPped in the middle of a provider
 * retry loop, past its lease, then SIGCONTed. Meanwhile the supervisor resets its bundle and a
 * second worker completes it. On resuming, the paused worker must make no provider call at all —
 * its lease deadline (its own monotonic clock, which kept counting while it was stopped) has
 * passed — and its writes are fenced out.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, startSimulator, startWorker, waitFor, superviseInBackground } from './support/fleet.js';
import { spawnWorker } from './support/processes.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';

describe('a paused worker', () => {
  it('makes no provider call after SIGCONT once its lease has passed, and changes nothing', async () => {
    const db = await createTestDb();
    // Every request takes 2 s, the worker gives up on one after 1 s: it is always retrying.
    const sim = await startSimulator({ latencyMs: 2000 });
    const [b] = await enqueueVip(db.pool, 1);
    const key = stepIdempotencyKey(b!.vip_bundle_id, 'show_tickets');
    const paused = spawnWorker(db.url, sim.url, 'paused', { BUNDLEFLEET_LEASE_SECONDS: '3', BUNDLEFLEET_PROVIDER_TIMEOUT_MS: '1000' });
    await waitFor('the first tickets request at the provider', async () => sim.ledger().some((e) => e.idempotency_key === key), 15_000);
    await new Promise((r) => setTimeout(r, 1_400)); // inside the second try
    paused.child.kill('SIGSTOP');
    onCleanup(async () => void paused.child.kill('SIGCONT'));

    sim.setFaults({ latencyMs: 0 });
    superviseInBackground(db.pool);
    startWorker(db.url, sim, { name: 'successor' });
    await waitFor('the successor to complete the bundle', async () => {
      const { rows } = await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);
      return rows[0].state === 'completed';
    }, 20_000);
    const ledgerBefore = JSON.stringify(sim.ledger());
    const { rows: before } = await db.pool.query(`SELECT * FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);

    paused.child.kill('SIGCONT');
    await new Promise((r) => setTimeout(r, 2_500)); // its pending timers fire; a retry would go out now
    expect(JSON.stringify(sim.ledger())).toBe(ledgerBefore);
    const { rows: after } = await db.pool.query(`SELECT * FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);
    expect(after).toEqual(before);
    expect(paused.child.exitCode).toBeNull(); // it did not crash either
  });
});
