/** The supervisor's decisions on real PostgreSQL; each test fails when its invariant breaks. */
import pg from 'pg';
import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup, type TestDb } from './support/db.js';
import { allInState, enqueueVip, quietLogger, startSimulator, startWorker, vipPayload, waitFor, claimAs, workerGone } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { recordBooked, recordFailure } from '../src/agents/fenced-writes.js';
import { runOnce, supervisorHolder, type SupervisorOptions } from '../src/supervisor/supervisor.js';
import { decideBatch } from '../src/supervisor/decisions.js';
import { acquireLease, releaseLease, SUPERVISOR_LEASE } from '../src/supervisor/lease.js';
import { ackAlert, countOpenAlerts, listAlerts } from '../src/supervisor/alerts.js';
import { cancelBundle, retryBundle } from '../src/supervisor/operator.js';
import { soldOutId } from '../src/providers/simulator.js';
import { Conflict, NotFound, BadInput } from '../src/errors.js';
import { createPool } from '../src/db/pool.js';
import { WORKER_LOCK_KEY_SQL } from '../src/scheduler/liveness.js';
import { claimBundles } from '../src/scheduler/claim.js';
import { inspectBundle } from '../src/bundles/read.js';

const fast: SupervisorOptions = { backoffBaseSeconds: 0.01, backoffMaxSeconds: 0.05, logger: quietLogger() };

async function bundle(db: TestDb, id: string) {
  const { rows } = await db.pool.query('SELECT * FROM bundles WHERE id = $1', [id]);
  return rows[0];
}

/** Holds a worker's liveness lock on its own connection, as a live worker process would. */
async function liveWorker(db: TestDb, id: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query(`SELECT pg_advisory_lock(${WORKER_LOCK_KEY_SQL})`, [id]);
  onCleanup(() => client.end());
  return client;
}

async function claimOne(db: TestDb, workerId: string, leaseSeconds = 60) {
  const [claimed] = await claimAs(db.pool, { workerId, limit: 1, leaseSeconds });
  return claimed!;
}

async function historyReasons(db: TestDb, id: string): Promise<string[]> {
  const { rows } = await db.pool.query('SELECT reason FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [id]);
  return rows.map((r) => r.reason);
}

describe('supervisor: resets', () => {
  it('resets a running bundle whose worker is gone at once, and leaves a live worker\'s lease alone', async () => {
    const db = await createTestDb();
    const [gone, alive] = await enqueueVip(db.pool, 2);
    await liveWorker(db, 'alive-worker');
    const a = await claimOne(db, 'gone-worker');
    await workerGone('gone-worker');
    const b = await claimOne(db, 'alive-worker');
    const report = await runOnce(db.pool, fast);
    expect(report.orphans).toBe(1);
    const ids = [gone!.vip_bundle_id, alive!.vip_bundle_id];
    const orphan = await bundle(db, a.id);
    expect(ids).toContain(a.id);
    expect(orphan).toMatchObject({ state: 'pending', failure_count: 1, reset_count: 1, locked_by: null });
    expect(orphan.next_run_at.getTime()).toBeLessThanOrEqual(Date.now() + 50);
    expect(await bundle(db, b.id)).toMatchObject({ state: 'running', locked_by: 'alive-worker', failure_count: 0 });
  });

  it("still resets a gone worker's bundles while a claim under its id probes its lock (the probe's shared lock is not liveness)", async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 2);
    const claimed = await claimOne(db, 'probed-worker');
    await workerGone('probed-worker');
    // A claim sent under the gone id takes no bundle, and its probe holds a shared lock on the
    // key for the rest of its transaction: kept open here while the supervisor looks.
    const prober = new pg.Client({ connectionString: db.url });
    await prober.connect();
    onCleanup(() => prober.end());
    await prober.query('BEGIN');
    expect(await claimBundles(prober, { workerId: 'probed-worker', limit: 1, leaseSeconds: 60 })).toEqual([]);
    const { rows: held } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted`);
    expect(held[0].n).toBeGreaterThanOrEqual(1);
    const report = await runOnce(db.pool, fast);
    expect(report.orphans).toBe(1);
    expect(await bundle(db, claimed.id)).toMatchObject({ state: 'pending', locked_by: null });
    await prober.query('ROLLBACK');
  });

  it('resets an expired lease with backoff and fences the old attempt out', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    await liveWorker(db, 'slow-worker');
    const claimed = await claimOne(db, 'slow-worker', 1);
    await db.pool.query(`UPDATE bundles SET locked_until = now() - interval '1 second' WHERE id = $1`, [claimed.id]);
    const report = await runOnce(db.pool, { ...fast, backoffBaseSeconds: 30, backoffMaxSeconds: 60 });
    expect(report.expired).toBe(1);
    const row = await bundle(db, claimed.id);
    expect(row).toMatchObject({ state: 'pending', failure_count: 1, reset_count: 1 });
    expect(row.next_run_at.getTime()).toBeGreaterThan(Date.now() + 10_000); // backoff of 15–30 s
    // The stale agent wakes up: its write changes nothing.
    const fence = { bundleId: claimed.id, attempt: claimed.attempt, actor: 'slow-worker', leaseSeconds: 60 };
    expect(await recordBooked(db.pool, fence, 0, 'show_tickets', `${claimed.id}:show_tickets`, 'TKT-1')).toBe(false);
    expect(await bundle(db, claimed.id)).toMatchObject({ state: 'pending', attempt: 1 });
    const { rowCount } = await db.pool.query('SELECT 1 FROM steps WHERE bundle_id = $1', [claimed.id]);
    expect(rowCount).toBe(0);
  });

  it('gives each expiry exactly one action however many supervisors run', async () => {
    const db = await createTestDb();
    await enqueueBundles(db.pool, Array.from({ length: 300 }, () => ({ payload: {} })), { kind: 'noop' });
    const claimed = await claimAs(db.pool, { workerId: 'nobody', limit: 300, leaseSeconds: 0 });
    await workerGone('nobody');
    expect(claimed).toHaveLength(300);
    // Bypass the fleet-wide lock on purpose: the conditional UPDATEs alone must keep actions single.
    const pools = Array.from({ length: 4 }, () => createPool(db.url, { max: 2 }));
    onCleanup(() => Promise.all(pools.map((p) => p.end())));
    const limits = { maxAttempts: 5, maxUndoAttempts: 5, backoffBaseSeconds: 1, backoffMaxSeconds: 1, batchSize: 20, actor: 'sup' };
    const drain = async (pool: pg.Pool, selection: 'orphans' | 'expired') => {
      let n = 0;
      for (;;) {
        const rows = await decideBatch(pool, selection, limits);
        if (!rows.length) return n;
        n += rows.length;
      }
    };
    const counts = await Promise.all(pools.map((p, i) => drain(p, i % 2 ? 'orphans' : 'expired')));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
    const { rows } = await db.pool.query(`SELECT bundle_id, count(*)::int AS n FROM bundle_history WHERE reason LIKE '%reset%' GROUP BY bundle_id`);
    expect(rows).toHaveLength(300);
    expect(rows.every((r) => r.n === 1)).toBe(true);
    const { rows: counters } = await db.pool.query('SELECT DISTINCT failure_count, reset_count FROM bundles');
    expect(counters).toEqual([{ failure_count: 1, reset_count: 1 }]);
  });

  it('lets only one pass run at a time fleet-wide', async () => {
    const db = await createTestDb();
    expect(await acquireLease(db.pool, SUPERVISOR_LEASE, 'another-pass', 30)).toBe(true);
    expect((await runOnce(db.pool, fast)).ran).toBe(false);
    await releaseLease(db.pool, SUPERVISOR_LEASE, 'another-pass');
    expect((await runOnce(db.pool, fast)).ran).toBe(true);
  });

  it('takes back at once a lease its own process left behind (a pass cut off by a PostgreSQL restart), and runs local passes one at a time', async () => {
    const db = await createTestDb();
    expect(await acquireLease(db.pool, SUPERVISOR_LEASE, supervisorHolder(), 30)).toBe(true);
    const [a, b] = await Promise.all([runOnce(db.pool, fast), runOnce(db.pool, fast)]);
    expect([a.ran, b.ran]).toEqual([true, true]);
    // Given up at the end of the pass: another process may take it now.
    expect(await acquireLease(db.pool, SUPERVISOR_LEASE, 'another-process', 30)).toBe(true);
  });

  it('is not blocked by a supervisor that froze or crashed mid-pass: its lease expires, and a resumed holder decides nothing', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    await claimOne(db, 'gone-worker');
    await workerGone('gone-worker');
    // A pass took the lease and froze (its connection may well stay open: the lease does not care).
    expect(await acquireLease(db.pool, SUPERVISOR_LEASE, 'frozen-pass', 1)).toBe(true);
    expect((await runOnce(db.pool, fast)).ran).toBe(false);
    await new Promise((r) => setTimeout(r, 1_100));
    // The frozen pass resumes after another supervisor took over: its decisions apply to nothing.
    expect(await acquireLease(db.pool, SUPERVISOR_LEASE, 'next-pass', 30)).toBe(true);
    const limits = { maxAttempts: 5, maxUndoAttempts: 5, backoffBaseSeconds: 1, backoffMaxSeconds: 1, batchSize: 20, actor: 'sup' };
    expect(await decideBatch(db.pool, 'orphans', { ...limits, leaseHolder: 'frozen-pass' })).toEqual([]);
    expect(await decideBatch(db.pool, 'orphans', { ...limits, leaseHolder: 'next-pass' })).toHaveLength(1);
    const { rows } = await db.pool.query(`SELECT state FROM bundles`);
    expect(rows).toEqual([{ state: 'pending' }]);
  });
});

describe('supervisor: failures', () => {
  async function failedBundle(db: TestDb, errorClass: 'transient' | 'permanent', failureCount = 0) {
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query('UPDATE bundles SET failure_count = $2 WHERE id = $1', [b!.vip_bundle_id, failureCount]);
    const c = await claimOne(db, 'w');
    await recordFailure(db.pool, { bundleId: c.id, attempt: c.attempt, actor: 'w', leaseSeconds: 60 }, { step: 'inbound_flight', position: 1, errorClass, message: 'boom' });
    return c.id;
  }

  it('retries a transient failure with backoff while attempts remain', async () => {
    const db = await createTestDb();
    const id = await failedBundle(db, 'transient');
    await runOnce(db.pool, { ...fast, maxAttempts: 3 });
    expect(await bundle(db, id)).toMatchObject({ state: 'pending', failure_count: 1 });
  });

  it('compensates on a definitive no, and when attempts run out', async () => {
    const db = await createTestDb();
    const refused = await failedBundle(db, 'permanent');
    const exhausted = await failedBundle(db, 'transient', 2);
    await runOnce(db.pool, { ...fast, maxAttempts: 3 });
    expect(await bundle(db, refused)).toMatchObject({ state: 'compensating', failure_count: 1 });
    expect(await bundle(db, exhausted)).toMatchObject({ state: 'compensating', failure_count: 3 });
  });

  it('ends a bundle whose undo keeps failing as dead, with an alert and a VipBundleFailed_v1 event', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const id = b!.vip_bundle_id;
    await db.pool.query(`UPDATE bundles SET state = 'compensating' WHERE id = $1`, [id]);
    for (let i = 0; i < 2; i++) {
      const c = await claimOne(db, 'w');
      expect(c.phase).toBe('undo');
      await recordFailure(db.pool, { bundleId: id, attempt: c.attempt, actor: 'w', leaseSeconds: 60 }, { step: 'taxi', position: 3, errorClass: 'transient', message: 'cancel failed' });
      await runOnce(db.pool, { ...fast, maxUndoAttempts: 2 });
      await db.pool.query('UPDATE bundles SET next_run_at = now() WHERE id = $1', [id]);
    }
    expect(await bundle(db, id)).toMatchObject({ state: 'dead', undo_failure_count: 2 });
    const alerts = await listAlerts(db.pool);
    expect(alerts.map((a) => [a.bundle_id, a.kind])).toEqual([[id, 'dead']]);
    const { rows } = await db.pool.query(`SELECT data FROM pgboss.job WHERE name = 'VipBundleFailed_v1'`);
    expect(rows.map((r) => r.data.header.correlation_id)).toEqual([id]);
  });

  it('ends a poison bundle that kills its worker every time as dead with an alert, instead of looping', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    const opts = { ...fast, maxAttempts: 3, maxUndoAttempts: 2 };
    // Each round: a worker claims it and dies (its liveness lock is never held), the supervisor resets it.
    for (let round = 0; round < 10; round++) {
      await db.pool.query('UPDATE bundles SET next_run_at = now() WHERE id = $1', [b!.vip_bundle_id]);
      const claimed = await claimAs(db.pool, { workerId: `doomed-${round}`, limit: 1, leaseSeconds: 60 });
      await workerGone(`doomed-${round}`);
      await runOnce(db.pool, opts);
      if (!claimed.length) break;
    }
    const row = await bundle(db, b!.vip_bundle_id);
    expect(row).toMatchObject({ state: 'dead', failure_count: 3, undo_failure_count: 2 });
    expect((await listAlerts(db.pool)).some((a) => a.kind === 'dead' && a.bundle_id === row.id)).toBe(true);
    expect(await historyReasons(db, row.id)).toContain('owner gone: reset → dead');
  });
});

describe('compensation end to end', () => {
  it('undoes tickets and inbound flight after a definitive no on the return flight; nothing stays live', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueBundles(db.pool, [{ payload: { ...vipPayload(), return_flight_id: soldOutId(7) } }]);
    const id = b!.vip_bundle_id;
    startWorker(db.url, sim);
    await waitFor('failed', async () => (await bundle(db, id)).state === 'failed');
    await runOnce(db.pool, fast);
    await waitFor('compensated', () => allInState(db.pool, ['compensated']));
    const mine = sim.ledger().filter((e) => e.idempotency_key.startsWith(id));
    expect(mine.filter((e) => e.status === 'booked')).toEqual([]);
    expect(mine.map((e) => `${e.idempotency_key.split(':')[1]}:${e.status}`).sort()).toEqual([
      'inbound_flight:cancelled',
      'return_flight:refused',
      'show_tickets:cancelled',
    ]);
    const { rows } = await db.pool.query(`SELECT name, status FROM steps WHERE bundle_id = $1 ORDER BY position`, [id]);
    expect(rows).toEqual([
      { name: 'show_tickets', status: 'cancelled' },
      { name: 'inbound_flight', status: 'cancelled' },
      { name: 'return_flight', status: 'failed' },
    ]);
    const { rows: events } = await db.pool.query(`SELECT data FROM pgboss.job WHERE name = 'VipBundleFailed_v1'`);
    expect(events.map((e) => e.data.data.outcome)).toEqual(['compensated']);
    // The local tickets record goes with the cancelled tickets.
    const { rowCount } = await db.pool.query('SELECT 1 FROM tickets WHERE booking_id = $1', [b!.booking_id]);
    expect(rowCount).toBe(0);
  });

  it('retries an undo that fails transiently until it completes', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueBundles(db.pool, [{ payload: { ...vipPayload(), return_flight_id: soldOutId(8) } }]);
    const id = b!.vip_bundle_id;
    startWorker(db.url, sim, { providerRetries: 0 });
    await waitFor('failed', async () => (await bundle(db, id)).state === 'failed');
    sim.setFaults({ failRate: 1 }); // every cancel answers 503
    for (let i = 0; i < 3; i++) {
      await runOnce(db.pool, fast);
      await waitFor('undo attempt failed', async () => (await bundle(db, id)).state === 'failed');
    }
    expect((await bundle(db, id)).undo_failure_count).toBe(2);
    sim.setFaults({ failRate: 0 });
    await runOnce(db.pool, fast);
    await waitFor('compensated', () => allInState(db.pool, ['compensated']));
    expect(sim.ledger().filter((e) => e.idempotency_key.startsWith(id) && e.status === 'booked')).toEqual([]);
  });

  it('cancel sends a pending bundle to compensating; it ends compensated with nothing booked', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    expect(await cancelBundle(db.pool, b!.booking_id)).toMatchObject({ from_state: 'pending', state: 'compensating' });
    await expect(cancelBundle(db.pool, b!.vip_bundle_id)).rejects.toBeInstanceOf(Conflict);
    startWorker(db.url, sim);
    await waitFor('compensated', () => allInState(db.pool, ['compensated']));
    expect(sim.ledger().filter((e) => e.status === 'booked')).toEqual([]);
  });
});

describe('operator commands and alerts', () => {
  it('retry sends a dead bundle back to compensating with counters reset and resolves its alert', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', undo_failure_count = 9, finished_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    await runOnce(db.pool, fast);
    expect(await countOpenAlerts(db.pool)).toBe(1);
    expect(await retryBundle(db.pool, b!.vip_bundle_id)).toMatchObject({ from_state: 'dead', state: 'compensating' });
    expect(await bundle(db, b!.vip_bundle_id)).toMatchObject({ undo_failure_count: 0, failure_count: 0 });
    expect(await countOpenAlerts(db.pool)).toBe(0);
    await expect(retryBundle(db.pool, b!.vip_bundle_id)).rejects.toBeInstanceOf(Conflict);
    await expect(retryBundle(db.pool, '00000000-0000-4000-8000-000000000000')).rejects.toBeInstanceOf(NotFound);
    await expect(retryBundle(db.pool, 'nope')).rejects.toBeInstanceOf(BadInput);
  });

  it('raises one stuck alert per bundle across passes, publishes it, and acknowledging it closes it', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET created_at = now() - interval '2 hours', next_run_at = now() + interval '1 hour' WHERE id = $1`, [b!.vip_bundle_id]);
    const first = await runOnce(db.pool, { ...fast, stuckAfterSeconds: 60 });
    const second = await runOnce(db.pool, { ...fast, stuckAfterSeconds: 60 });
    expect([first.alerts_raised, second.alerts_raised]).toEqual([1, 0]);
    const [alert] = await listAlerts(db.pool);
    expect(alert).toMatchObject({ bundle_id: b!.vip_bundle_id, kind: 'stuck' });
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'BundleStuck_v1'`);
    expect(rows[0].n).toBe(1);
    await ackAlert(db.pool, alert!.id);
    expect(await countOpenAlerts(db.pool)).toBe(0);
    await runOnce(db.pool, { ...fast, stuckAfterSeconds: 60 });
    expect((await listAlerts(db.pool, { all: true })).length).toBe(1);
  });

  it('delivers alerts to the webhook, retrying a failed post after a backoff', async () => {
    const db = await createTestDb();
    const received: unknown[] = [];
    let fail = true;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (fail) return void res.writeHead(500).end();
        received.push(JSON.parse(body));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    onCleanup(() => new Promise((r) => server.close(r)));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET created_at = now() - interval '2 hours' WHERE id = $1`, [b!.vip_bundle_id]);
    const opts = { ...fast, stuckAfterSeconds: 60, alertWebhookUrl: url };
    expect((await runOnce(db.pool, opts)).alerts_delivered).toBe(0);
    expect((await listAlerts(db.pool))[0]).toMatchObject({ delivered_at: null, delivery_attempts: 1, last_delivery_error: 'HTTP 500' });
    // A failed post backs off before it is tried again; a pass within the backoff does not retry it.
    expect((await runOnce(db.pool, opts)).alerts_delivered).toBe(0);
    expect((await listAlerts(db.pool))[0]).toMatchObject({ delivery_attempts: 1 });
    await db.pool.query(`UPDATE alerts SET next_delivery_at = now()`); // the backoff has passed
    fail = false;
    expect((await runOnce(db.pool, opts)).alerts_delivered).toBe(1);
    expect(received).toEqual([{ alert: expect.objectContaining({ bundle_id: b!.vip_bundle_id, kind: 'stuck' }) }]);
    expect((await runOnce(db.pool, opts)).alerts_delivered).toBe(0);
  });

  it('prunes finished bundles and their history past the retention, keeping the rest', async () => {
    const db = await createTestDb();
    const [old, fresh] = await enqueueVip(db.pool, 2);
    await db.pool.query(`UPDATE bundles SET state = 'completed', finished_at = now() - interval '40 days' WHERE id = $1`, [old!.vip_bundle_id]);
    // A transition of each bundle: the old one's finish, 40 days ago; the fresh one's claim, now.
    await db.pool.query(
      `INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason, at)
       VALUES ($1, 'w1', 1, 'running', 'completed', 'completed', now() - interval '40 days'), ($2, 'w1', 1, 'pending', 'running', 'claimed', now())`,
      [old!.vip_bundle_id, fresh!.vip_bundle_id],
    );
    const report = await runOnce(db.pool, { ...fast, retentionSeconds: 30 * 86_400 });
    expect(report.pruned).toBe(2);
    expect(await bundle(db, old!.vip_bundle_id)).toBeUndefined();
    expect(await historyReasons(db, old!.vip_bundle_id)).toEqual([]);
    expect(await bundle(db, fresh!.vip_bundle_id)).toBeDefined();
    expect(await historyReasons(db, fresh!.vip_bundle_id)).toEqual(['claimed']);
    expect((await inspectBundle(db.pool, fresh!.vip_bundle_id)).history.map((h) => h.reason)).toEqual(['enqueued', 'claimed']);
  });
});
