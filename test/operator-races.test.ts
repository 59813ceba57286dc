/**
 * Issue 9, item 10: an operator's cancel that races a claim (the row moves from pending to running
 * while the cancel waits for it) applies to the bundle as it is now, instead of refusing with "it
 * is running; only pending, running or failed bundles can be cancelled".
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDb, onCleanup } from './support/db.js';
import { agentDeps, claimAs, enqueueVip, holdWorkerLock, simulatorUrls, startSimulator } from './support/fleet.js';
import { claimBundles } from '../src/scheduler/claim.js';
import { runAgent } from '../src/agents/agent.js';
import { ProviderClient } from '../src/providers/client.js';
import type { ProviderExchange } from '../src/providers/exchange.js';
import { cancelBundle } from '../src/supervisor/operator.js';

describe('operator cancel racing a claim', () => {
  it('cancels the bundle the claim just took, instead of a contradictory refusal', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await holdWorkerLock(db.pool, 'claimer');
    // The claim's transaction has taken the row and not committed yet.
    const claimer = new pg.Client({ connectionString: db.url });
    await claimer.connect();
    onCleanup(() => claimer.end());
    await claimer.query('BEGIN');
    expect(await claimBundles(claimer, { workerId: 'claimer', limit: 1, leaseSeconds: 60 })).toHaveLength(1);
    const cancel = cancelBundle(db.pool, b!.vip_bundle_id);
    await new Promise((r) => setTimeout(r, 300)); // the cancel now waits for the row
    await claimer.query('COMMIT');
    expect(await cancel).toMatchObject({ vip_bundle_id: b!.vip_bundle_id, from_state: 'running', state: 'compensating' });
    const { rows } = await db.pool.query('SELECT state FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    expect(rows[0].state).toBe('compensating');
  });
  it('stops the agent of a bundle cancelled between its claim and its first provider call: no call is made', async () => {
    // The agent's first fenced write (the first step's intent) is also its check that the attempt
    // still owns the bundle. Stop 18 tried writing that intent in the claim instead and lost the
    // check: this bundle was then booked at the provider (bench/README.md, "Tried and not kept").
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const [claimed] = await claimAs(db.pool, { workerId: 'racer', limit: 1, leaseSeconds: 60 });
    await cancelBundle(db.pool, b!.vip_bundle_id);
    const exchanges: ProviderExchange[] = [];
    const providers = new ProviderClient(simulatorUrls(sim), { timeoutMs: 2000, onExchange: (e) => exchanges.push(e) });
    expect(await runAgent(claimed!, agentDeps(db.pool, sim, { workerId: 'racer', providers }))).toBe('fenced');
    expect(exchanges).toEqual([]);
    expect(sim.ledger()).toEqual([]);
  });
});
