/**
 * Issue 14 on the embedded server, with nothing but Node: a small transaction-mode pooler
 * (support/txn-pooler.ts: each statement outside a transaction on whichever server connection is
 * free, as PgBouncer pool_mode=transaction does) in front of the test database.
 *
 * - the start-up probe tells a transaction pooler from a session, and `worker`/`dev` refuse it
 *   with one sentence naming pool_mode=transaction and the fix (exit 2);
 * - with BUNDLEFLEET_SESSION_DATABASE_URL / --session-database-url pointing at PostgreSQL, the
 *   fleet runs with DATABASE_URL on the transaction pooler: bundles complete, LISTEN wakes the
 *   worker, recycled server connections cause no resets;
 * - nothing else needs a session: enqueue (no named prepared statements) and migrate;
 * - a slow connection checkout is reported with the pool size and the sizing rule.
 * The same through a real PgBouncer: test/pgbouncer/ (`npm run test:pgbouncer`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup, urlFor } from './support/db.js';
import { countByState, quietLogger, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { startTxnPooler, type TxnPooler, type TxnPoolerOptions } from './support/txn-pooler.js';
import { createPool, POOL_SIZING_RULE, resolveSessionDatabaseUrl, type SlowAcquire } from '../src/db/pool.js';
import { allowNamedStatementsOnSession, assertSessionConnection, probeSession } from '../src/db/session-probe.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { migrate } from '../src/db/migrate.js';
import { SessionRequired, BadInput } from '../src/errors.js';
import { rootLogger, setRootLogger } from '../src/logger.js';

const BIN = fileURLToPath(new URL('../bin/bundlefleet', import.meta.url));

async function pooler(url: string, opts?: TxnPoolerOptions): Promise<TxnPooler> {
  const p = await startTxnPooler(url, opts);
  onCleanup(() => p.close());
  return p;
}

function pooledPool(url: string, max = 4): pg.Pool {
  const pool = createPool(url, { max });
  onCleanup(() => pool.end());
  return pool;
}

/** Runs `bundlefleet ...` in a scratch directory with only the given database settings. */
function bundlefleet(args: string[], env: Record<string, string>, cwd?: string): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(DATABASE_URL|PROVIDERS_URL|TICKETS_URL|FLIGHTS_URL|TAXIS_URL|BUNDLEFLEET_.*|LOG_LEVEL)$/.test(k)) base[k] = v;
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...base, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  onCleanup(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await done;
  });
  return { child, done };
}

const uuid = (n: number, group: number) => `00000000-000${group}-4000-8000-${String(n).padStart(12, '0')}`;
const vip = (i: number) => ({
  customer_email: `pooled${i}@example.com`,
  show_id: uuid(1 + (i % 5), 1),
  number_of_tickets: 1 + (i % 3),
  passengers: [`Passenger ${i}`],
  inbound_flight_id: uuid(100 + i, 2),
  return_flight_id: uuid(200 + i, 3),
});

describe('the session probe', () => {
  it.each(['lifo', 'fifo'] as const)('tells a transaction-mode pooler (%s) from PostgreSQL itself', async (order) => {
    const db = await createTestDb();
    const txn = await pooler(db.url, { order });
    // Warm: several idle server connections, as in a pooler that has been serving for a while.
    const warm = await Promise.all([1, 2, 3].map(async () => {
      const c = new pg.Client({ connectionString: txn.url(db.url) });
      await c.connect();
      await c.query('BEGIN');
      return c;
    }));
    for (const c of warm) await c.query('COMMIT').then(() => c.end());
    expect((await probeSession(db.url)).session).toBe(true);
    const pooled = await probeSession(txn.url(db.url));
    expect(pooled.session).toBe(false);
    await expect(assertSessionConnection(db.url, 'x')).resolves.toBeUndefined();
    await expect(assertSessionConnection(txn.url(db.url), 'the worker liveness connection')).rejects.toThrow(SessionRequired);
  });

  it('leaves no lock behind on the pooled server connections', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url);
    await probeSession(txn.url(db.url)).catch(() => {});
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY($1::int[])`, [txn.serverPids()]);
    expect(rows[0].n).toBe(0);
  });
});

describe('BUNDLEFLEET_SESSION_DATABASE_URL', () => {
  it('defaults to DATABASE_URL and refuses a malformed value naming the flag and variable', () => {
    expect(resolveSessionDatabaseUrl('postgres://a@h/db', {})).toBe('postgres://a@h/db');
    expect(resolveSessionDatabaseUrl('postgres://a@h/db', { BUNDLEFLEET_SESSION_DATABASE_URL: ' postgres://b@direct/db ' })).toBe('postgres://b@direct/db');
    expect(() => resolveSessionDatabaseUrl('postgres://a@h/db', { BUNDLEFLEET_SESSION_DATABASE_URL: 'http://x' })).toThrow(BadInput);
    expect(() => resolveSessionDatabaseUrl('postgres://a@h/db', { BUNDLEFLEET_SESSION_DATABASE_URL: 'u:secret@db.example' })).toThrow(/--session-database-url \(BUNDLEFLEET_SESSION_DATABASE_URL\): must be a postgres:\/\/ URL/);
  });

  it('worker: a transaction pooler without the split is refused at start-up in one sentence (exit 2); a bad session URL is exit 2 too', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url);
    const refused = await bundlefleet(['worker'], { DATABASE_URL: txn.url(db.url), PROVIDERS_URL: 'http://127.0.0.1:9' }).done;
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/the worker liveness connection .*needs a PostgreSQL session of its own.*pool_mode=transaction.*BUNDLEFLEET_SESSION_DATABASE_URL \(or --session-database-url\)/);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    // The flag goes through the same check: the pooler given as the session URL is refused too.
    const viaFlag = await bundlefleet(['worker', '--session-database-url', txn.url(db.url)], { DATABASE_URL: db.url, PROVIDERS_URL: 'http://127.0.0.1:9' }).done;
    expect(viaFlag.code).toBe(2);
    expect(viaFlag.stderr).toMatch(/pool_mode=transaction/);
    const bad = await bundlefleet(['worker'], { DATABASE_URL: db.url, BUNDLEFLEET_SESSION_DATABASE_URL: 'mysql://app:s3cret@db/app', PROVIDERS_URL: 'http://127.0.0.1:9' }).done;
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--session-database-url \(BUNDLEFLEET_SESSION_DATABASE_URL\)/);
    expect(bad.stderr).not.toMatch(/s3cret/);
    // Every command with --database-url (but the db ones) takes --session-database-url too, validated the same way.
    const stats = await bundlefleet(['stats', '--session-database-url', 'not a url'], { DATABASE_URL: db.url }).done;
    expect(stats.code).toBe(2);
    expect(stats.stderr).toMatch(/--session-database-url \(BUNDLEFLEET_SESSION_DATABASE_URL\): is not a URL/);
  });

  it('dev: refused the same way before it starts anything', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url);
    const dir = await mkdtemp(join(tmpdir(), 'bundlefleet-pooler-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const r = await bundlefleet(['dev', '--port', '0', '--providers-port', '0'], { DATABASE_URL: txn.url(db.url) }, dir).done;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/pool_mode=transaction.*BUNDLEFLEET_SESSION_DATABASE_URL/);
    expect(r.stderr).not.toMatch(/bundlefleet dev is running/);
  });

  it('worker: with --session-database-url at PostgreSQL and DATABASE_URL on the transaction pooler, bundles complete and NOTIFY wakes it', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url, { maxServers: 6 });
    const sim = await startSimulator({ latencyMs: 5 });
    const pooledUrl = txn.url(db.url);
    // A 60 s poll interval: only a NOTIFY received on the session connection can wake it in time.
    const { child, done } = bundlefleet(['worker', '--session-database-url', db.url, '--poll-interval-ms', '60000', '--concurrency', '4'], {
      DATABASE_URL: pooledUrl,
      PROVIDERS_URL: sim.url,
    });
    const direct = db.pool;
    await waitFor('the worker liveness lock', async () => (await direct.query(`SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'bundlefleet worker %' AND datname = current_database()`)).rowCount! > 0, 20_000);
    const enqueuer = pooledPool(pooledUrl, 2);
    for (let i = 0; i < 6; i++) await enqueueBundles(enqueuer, [{ payload: vip(i) }], { kindVersion: 1 });
    await waitFor('6 completed bundles', async () => (await countByState(direct)).completed === 6, 20_000);
    child.kill('SIGTERM');
    expect((await done).code).toBe(0);
    // A real process on a loaded two-core machine: start-up alone took tens of seconds in full runs.
  }, 120_000);
});

describe('a fleet with DATABASE_URL on a transaction pooler and the session URL at PostgreSQL', () => {
  it('completes, and server connections recycled under it cause no resets', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url, { maxServers: 8 });
    const sim = await startSimulator({ latencyMs: 30 });
    const pooledUrl = txn.url(db.url);
    startWorker(pooledUrl, sim, { sessionDatabaseUrl: db.url, concurrency: 5, pollIntervalMs: 60_000 });
    startWorker(pooledUrl, sim, { sessionDatabaseUrl: db.url, concurrency: 5, pollIntervalMs: 60_000 });
    const { runOnce } = await import('../src/supervisor/supervisor.js');
    const supervisorPool = pooledPool(pooledUrl, 3);
    let recycling = true;
    const recycler = (async () => {
      while (recycling) {
        txn.recycle();
        await runOnce(supervisorPool, { maxAttempts: 3, maxUndoAttempts: 3, backoffBaseSeconds: 0.05, backoffMaxSeconds: 0.2, logger: quietLogger() });
        await new Promise((r) => setTimeout(r, 150));
      }
    })();
    onCleanup(async () => {
      recycling = false;
      await recycler;
    });
    const enqueuer = pooledPool(pooledUrl, 2);
    await enqueueBundles(enqueuer, Array.from({ length: 30 }, (_, i) => ({ payload: vip(i) })), { kindVersion: 1 });
    await waitFor('30 completed bundles', async () => (await countByState(db.pool)).completed === 30, 40_000).catch(async (err) => {
      throw new Error(`${(err as Error).message}: ${JSON.stringify(await countByState(db.pool))}, pooler ${JSON.stringify(txn.stats())}`);
    });
    recycling = false;
    await recycler;
    const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundle_history WHERE actor = 'supervisor'`);
    expect(rows[0]!.n).toBe(0);
    const attempts = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE attempt > 1`);
    expect(attempts.rows[0]!.n).toBe(0);
  });
});

describe('what needs no session', () => {
  it('no query in src/ names a prepared statement itself (they break behind a transaction pooler); only db/statements.ts does, on a session', async () => {
    const { readdir, readFile } = await import('node:fs/promises');
    const src = fileURLToPath(new URL('../src/', import.meta.url));
    const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts'));
    const named: string[] = [];
    for (const file of files) {
      const text = await readFile(join(src, file), 'utf8');
      // A query config object with a `name` (pg prepares it once per connection under that name).
      for (const m of text.matchAll(/query(?:<[^>]*>)?\(\s*\{[^}]*\bname\s*:/g)) named.push(`src/${file}: ${m[0].replace(/\s+/g, ' ')}`);
    }
    expect(named).toEqual([]);
  });

  it('enqueue from two processes through a transaction pooler (no named prepared statement)', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url);
    const a = pooledPool(txn.url(db.url), 1);
    const b = pooledPool(txn.url(db.url), 1);
    for (let i = 0; i < 4; i++) {
      await enqueueBundles(a, [{ payload: { i } }], { kind: 'noop' });
      await enqueueBundles(b, [{ payload: { i } }], { kind: 'noop' });
      await enqueueBundles(a, [{ payload: vip(i) }], { kindVersion: 1 });
    }
    expect((await countByState(db.pool)).pending).toBe(12);
  });

  it('`serve` behind a transaction pooler names no statement: its start-up probe finds no session, and enqueue still works from two pools', async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url);
    const a = pooledPool(txn.url(db.url), 1);
    const b = pooledPool(txn.url(db.url), 1);
    expect(await allowNamedStatementsOnSession(a, txn.url(db.url))).toBe(false);
    expect(await allowNamedStatementsOnSession(b, txn.url(db.url))).toBe(false);
    for (let i = 0; i < 4; i++) {
      await enqueueBundles(a, [{ payload: { i } }], { kind: 'noop' });
      await enqueueBundles(b, [{ payload: vip(i), idempotencyKey: `pooled-${i}` }], { kindVersion: 1 });
    }
    expect((await countByState(db.pool)).pending).toBe(8);
  });

  it('migrate through a transaction pooler, twice at once, leaving no advisory lock behind', async () => {
    const admin = new pg.Client({ connectionString: urlFor('postgres') });
    await admin.connect();
    const name = `pooled_migrate_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${name}`);
    onCleanup(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    });
    const url = urlFor(name);
    // The oldest idle server connection first: a session lock and its unlock would land on different ones.
    const txn = await pooler(url, { maxServers: 6, order: 'fifo' });
    const pools = [pooledPool(txn.url(url), 2), pooledPool(txn.url(url), 2)];
    const applied = await Promise.all(pools.map((p) => migrate(p, txn.url(url))));
    expect(applied.flat().length).toBeGreaterThan(0);
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = $1`, [name]);
    expect(rows[0].n).toBe(0);
  });
});

describe('a slow connection checkout', () => {
  it('is reported when this process pool is full', async () => {
    const db = await createTestDb();
    const waits: SlowAcquire[] = [];
    const pool = createPool(db.url, { max: 1, onSlowAcquire: (w) => waits.push(w) });
    onCleanup(() => pool.end());
    const held = await pool.connect();
    setTimeout(() => held.release(), 1_200);
    await pool.query('SELECT 1');
    expect(waits).toHaveLength(1);
    expect(waits[0]).toMatchObject({ where: 'pool', max: 1 });
    expect(waits[0]!.waitedMs).toBeGreaterThan(1_000);
  });

  it("is reported when a pooler makes a new connection's first statement wait, with the sizing rule in the warning", async () => {
    const db = await createTestDb();
    const txn = await pooler(db.url, { maxServers: 1 });
    const lines: string[] = [];
    const previous = rootLogger();
    setRootLogger(pino({ level: 'warn' }, new Writable({ write: (chunk, _e, cb) => (lines.push(String(chunk)), cb()) })));
    onCleanup(async () => setRootLogger(previous));
    // Another client holds the pooler's only server connection in a transaction for 1.2 s.
    const other = new pg.Client({ connectionString: txn.url(db.url) });
    await other.connect();
    onCleanup(() => other.end());
    await other.query('BEGIN');
    setTimeout(() => void other.query('COMMIT'), 1_200);
    const pool = createPool(txn.url(db.url), { max: 3 });
    onCleanup(() => pool.end());
    await pool.query('SELECT 1');
    await waitFor('the warning', async () => lines.length > 0, 3_000);
    const warning = JSON.parse(lines[0]!);
    expect(warning).toMatchObject({ where: 'server', poolMax: 3 });
    expect(warning.msg).toMatch(/^waited 1\.\d s for a database connection: a new connection's first statement waited for a server; /);
    expect(warning.msg).toContain(POOL_SIZING_RULE);
    expect(POOL_SIZING_RULE).toMatch(/per worker min\(concurrency \+ 2, 20\) \+ 1/);
  });
});
