/**
 * Issue 14 through a real PgBouncer: worker and supervisor processes (`bin/bundlefleet`) with
 * DATABASE_URL on a PgBouncer in front of the test PostgreSQL, the provider simulator, bundles
 * enqueued through the same PgBouncer.
 *
 * - pool_mode=session: bundles complete; a SIGKILLed worker's bundles are reset within seconds
 *   (PgBouncer's DISCARD ALL drops its lock), not after the 60 s lease.
 * - pool_mode=transaction with the split (--session-database-url at PostgreSQL) and
 *   server_lifetime=5: `migrate` works, bundles complete, recycled server connections cause no
 *   reset, a SIGKILLed worker's bundles are reset in about a second, the supervisor's lease works
 *   (no skipped passes) and no advisory lock is left on any server connection.
 * - pool_mode=transaction without the split: `worker` is refused at start-up (exit 2).
 * - a PgBouncer pool smaller than the fleet's: the wait is explained with the sizing rule.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup, type TestDb } from '../support/db.js';
import { BIN } from '../support/processes.js';
import { countByState, startSimulator, waitFor } from '../support/fleet.js';
import { createPool } from '../../src/db/pool.js';
import { enqueueBundles } from '../../src/bundles/enqueue.js';
import { startPgBouncer } from './support/pgbouncer.js';


interface Proc {
  child: ChildProcess;
  output(): string;
  done: Promise<number | null>;
}

function bundlefleet(args: string[], env: Record<string, string>): Proc {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(DATABASE_URL|PROVIDERS_URL|TICKETS_URL|FLIGHTS_URL|TAXIS_URL|BUNDLEFLEET_.*|LOG_LEVEL)$/.test(k)) base[k] = v;
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...base, LOG_LEVEL: 'info', LOG_FORMAT: 'json', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await done;
  });
  return { child, output: () => output, done };
}

const uuid = (n: number, group: number) => `00000000-000${group}-4000-8000-${String(n).padStart(12, '0')}`;
let seq = 0;
const vip = () => {
  const i = seq++;
  return { customer_email: `bouncer${i}@example.com`, show_id: uuid(1 + (i % 5), 1), number_of_tickets: 1 + (i % 3), passengers: [`Passenger ${i}`], inbound_flight_id: uuid(100 + i, 2), return_flight_id: uuid(200 + i, 3) };
};

function pooled(url: string, max = 2): pg.Pool {
  const pool = createPool(url, { max });
  onCleanup(() => pool.end());
  return pool;
}

async function livenessConnections(db: TestDb, name: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE $1`, [`bundlefleet worker ${name}.%`]);
  return rows[0]!.n;
}

/** SIGKILLs `name` once it runs some bundles; returns how long until the supervisor reset every one of them. */
async function killAndTimeRecovery(db: TestDb, worker: Proc, name: string): Promise<{ seconds: number; orphans: number }> {
  const running = async () => (await db.pool.query<{ id: string }>(`SELECT id FROM bundles WHERE state = 'running' AND locked_by LIKE $1`, [`${name}.%`])).rows;
  await waitFor(`${name} running bundles`, async () => (await running()).length >= 2, 20_000);
  worker.child.kill('SIGKILL');
  const killedAt = performance.now();
  const orphans = (await running()).map((r) => r.id);
  await waitFor(`${name}'s bundles reset`, async () => {
    const { rows } = await db.pool.query(`SELECT 1 FROM bundles WHERE id = ANY($1::uuid[]) AND state = 'running' AND locked_by LIKE $2`, [orphans, `${name}.%`]);
    return rows.length === 0;
  }, 30_000);
  return { seconds: (performance.now() - killedAt) / 1000, orphans: orphans.length };
}

describe('pool_mode=session', () => {
  it('completes, and recovers a SIGKILLed worker within seconds', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 50 });
    const bouncer = await startPgBouncer(db.url, { poolMode: 'session' });
    const url = bouncer.url(db.url);
    const env = { DATABASE_URL: url, PROVIDERS_URL: sim.url };
    const w1 = bundlefleet(['worker', '--name', 'w1', '--concurrency', '5'], env);
    bundlefleet(['worker', '--name', 'w2', '--concurrency', '5'], env);
    bundlefleet(['supervise', '--loop', '--interval-seconds', '0.3'], env);
    await waitFor('two workers', async () => (await livenessConnections(db, 'w1')) + (await livenessConnections(db, 'w2')) === 2, 20_000);
    const enqueuer = pooled(url);
    await enqueueBundles(enqueuer, Array.from({ length: 40 }, () => ({ payload: vip() })), { kindVersion: 1 });
    await waitFor('40 completed', async () => (await countByState(db.pool)).completed === 40, 60_000);

    sim.setFaults({ latencyMs: 400 });
    await enqueueBundles(enqueuer, Array.from({ length: 20 }, () => ({ payload: vip() })), { kindVersion: 1 });
    const recovery = await killAndTimeRecovery(db, w1, 'w1');
    process.stderr.write(`session mode: ${recovery.orphans} bundles of the SIGKILLed worker reset ${recovery.seconds.toFixed(2)} s after the kill\n`);
    expect(recovery.seconds).toBeLessThan(5);
    await waitFor('60 completed', async () => (await countByState(db.pool)).completed === 60, 60_000);
    expect(w1.output()).not.toMatch(/pool_mode=transaction/);
  });
});

describe('pool_mode=transaction', () => {
  it('with the split: migrate works, bundles complete, server_lifetime=5 causes no reset, a SIGKILLed worker is recovered in about a second', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 100 });
    const bouncer = await startPgBouncer(db.url, { poolMode: 'transaction', serverLifetime: 5 });
    const url = bouncer.url(db.url);
    const migrated = bundlefleet(['migrate'], { DATABASE_URL: url });
    expect(await migrated.done, migrated.output()).toBe(0);

    const env = { DATABASE_URL: url, PROVIDERS_URL: sim.url, BUNDLEFLEET_SESSION_DATABASE_URL: db.url };
    const w1 = bundlefleet(['worker', '--name', 'w1', '--concurrency', '5'], env);
    const w2 = bundlefleet(['worker', '--name', 'w2', '--concurrency', '5', '--session-database-url', db.url], { DATABASE_URL: url, PROVIDERS_URL: sim.url });
    const supervisor = bundlefleet(['supervise', '--loop', '--interval-seconds', '0.3'], { DATABASE_URL: url });
    await waitFor('two workers', async () => (await livenessConnections(db, 'w1')) + (await livenessConnections(db, 'w2')) === 2, 20_000);
    const enqueuer = pooled(url);
    // Ten a second for eight seconds: the run outlives server_lifetime, so server connections are recycled under it.
    for (let wave = 0; wave < 8; wave++) {
      for (let i = 0; i < 10; i++) await enqueueBundles(enqueuer, [{ payload: vip() }], { kindVersion: 1 });
      await new Promise((r) => setTimeout(r, 1_000));
    }
    await waitFor('80 completed', async () => (await countByState(db.pool)).completed === 80, 60_000);
    expect(await bouncer.log()).toMatch(/server lifetime over/);
    const resets = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundle_history WHERE actor = 'supervisor'`);
    expect(resets.rows[0]!.n).toBe(0);
    const retried = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE attempt > 1`);
    expect(retried.rows[0]!.n).toBe(0);
    expect(w1.output() + w2.output()).not.toMatch(/liveness lock lost/);
    // No statement failed for want of a session: every provider exchange was recorded (4 steps a bundle).
    expect(w1.output() + w2.output()).not.toMatch(/prepared statement|could not record provider exchanges/);
    const exchanges = await db.pool.query<{ n: number }>(`SELECT count(DISTINCT bundle_id)::int AS n FROM provider_exchanges`);
    expect(exchanges.rows[0]!.n).toBe(80);

    sim.setFaults({ latencyMs: 400 });
    await enqueueBundles(enqueuer, Array.from({ length: 20 }, () => ({ payload: vip() })), { kindVersion: 1 });
    const recovery = await killAndTimeRecovery(db, w1, 'w1');
    process.stderr.write(`transaction mode with the split: ${recovery.orphans} bundles of the SIGKILLed worker reset ${recovery.seconds.toFixed(2)} s after the kill\n`);
    expect(recovery.seconds).toBeLessThan(2.5);
    await waitFor('100 completed', async () => (await countByState(db.pool)).completed === 100, 60_000);

    // The supervisor's exclusivity is a lease row, not a session lock: it never skipped a pass
    // for want of a lock, and once every process has stopped no advisory lock is left behind.
    expect(supervisor.output()).not.toMatch(/another supervisor pass is running/);
    w2.child.kill('SIGTERM');
    supervisor.child.kill('SIGTERM');
    expect(await w2.done).toBe(0);
    expect(await supervisor.done).toBe(0);
    await enqueuer.end();
    const locks = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);
    expect(locks.rows[0]!.n).toBe(0);
  });

  it('without the split: worker is refused at start-up, naming pool_mode=transaction and the fix', async () => {
    const db = await createTestDb();
    const bouncer = await startPgBouncer(db.url, { poolMode: 'transaction' });
    const worker = bundlefleet(['worker'], { DATABASE_URL: bouncer.url(db.url), PROVIDERS_URL: 'http://127.0.0.1:9' });
    expect(await worker.done).toBe(2);
    expect(worker.output()).toMatch(/needs a PostgreSQL session of its own.*pool_mode=transaction.*BUNDLEFLEET_SESSION_DATABASE_URL/);
  });
});

describe('a PgBouncer pool smaller than the fleet', () => {
  it('makes a command wait, and the wait is explained with the sizing rule', async () => {
    const db = await createTestDb();
    // As many server connections as the command's own pool (4): with fewer, its idle clients would
    // keep theirs for 30 s in session mode while its other clients wait (the 32 s `stats`).
    const bouncer = await startPgBouncer(db.url, { poolMode: 'session', defaultPoolSize: 4 });
    const url = bouncer.url(db.url);
    // Four other sessions take every server connection; they go away after 3 s.
    const holders = await Promise.all([1, 2, 3, 4].map(async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query('SELECT 1');
      return c;
    }));
    setTimeout(() => void Promise.all(holders.map((c) => c.end())), 3_000);
    const stats = bundlefleet(['stats', '--json'], { DATABASE_URL: url, LOG_LEVEL: 'warn' });
    expect(await stats.done, stats.output()).toBe(0);
    expect(stats.output()).toMatch(/waited \d+\.\d s for a database connection: a new connection's first statement waited for a server; .*PgBouncer default_pool_size.*per worker min\(concurrency \+ 2, 20\) \+ 1/);
  });
});
