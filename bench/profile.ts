/**
 * Where bundlefleet's time goes in scenario 5a (issue 12): run it under
 *
 *   node --cpu-prof --cpu-prof-dir=bench/results/tmp/prof --import tsx bench/profile.ts [--bundles 3000] [--concurrency 100]
 *
 * It starts its own embedded PostgreSQL (bench/results/tmp/pg-prof) with pg_stat_statements
 * loaded (shared_preload_libraries; the embedded binaries ship it), runs VIP bundles through an
 * in-process worker against the simulator at 0 ms latency, and prints to stdout (markdown):
 * statements per bundle and time per statement (pg_stat_statements), transactions per bundle
 * (pg_stat_database), updates and HOT updates per table (pg_stat_user_tables), and EXPLAIN
 * (ANALYZE, BUFFERS) of the claim and of a batched step write, taken with the worker's own
 * functions on a second database. `node bench/profile-summary.mjs` summarises the CPU profile.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { ensureEmbeddedPostgres, stopEmbeddedPostgres } from '../src/db/embedded.js';
import { claimBundles } from '../src/scheduler/claim.js';
import { writeSteps } from '../src/agents/fenced-writes.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';
import { TMP_DIR, withDatabase } from './lib/server.js';
import { startSimulator } from './lib/procs.js';
import * as bf from './systems/bundlefleet.js';
import { load } from './lib/util.js';

const { values: args } = parseArgs({ options: { bundles: { type: 'string', default: '3000' }, concurrency: { type: 'string', default: '100' } } });
const N = Number(args.bundles);
const HOME = `${TMP_DIR}pg-prof`;

async function admin(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

const out: string[] = [];
const say = (s = '') => out.push(s);

async function statements(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{ query: string; calls: string; total: number; mean: number; rows: string; blks: string; wal: string }>(
    `SELECT regexp_replace(left(query, 200), '\\s+', ' ', 'g') AS query, calls, round(total_exec_time::numeric, 1)::float8 AS total,
            round(mean_exec_time::numeric, 3)::float8 AS mean, rows, shared_blks_hit + shared_blks_read AS blks, wal_bytes AS wal
     FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
     ORDER BY total_exec_time DESC LIMIT 25`,
  );
  say('| calls | per bundle | total ms | mean ms | rows | blocks/call | WAL bytes/call | statement |');
  say('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const calls = Number(r.calls);
    say(`| ${calls} | ${(calls / N).toFixed(3)} | ${r.total} | ${r.mean} | ${r.rows} | ${(Number(r.blks) / calls).toFixed(1)} | ${(Number(r.wal) / calls).toFixed(0)} | \`${r.query.replace(/\|/g, '\\|').slice(0, 140)}\` |`);
  }
}

async function tables(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query(
    `SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables
     WHERE schemaname = 'public' AND (n_tup_ins + n_tup_upd) > 0 ORDER BY relname`,
  );
  say('| table | inserts | updates | HOT updates | deletes |');
  say('|---|---|---|---|---|');
  for (const r of rows) say(`| ${r.relname} | ${r.n_tup_ins} | ${r.n_tup_upd} | ${r.n_tup_hot_upd} | ${r.n_tup_del} |`);
}

/** A Queryable that runs EXPLAIN (ANALYZE, BUFFERS) of whatever the worker's function sends, inside a rolled-back transaction. */
function explaining(client: pg.PoolClient, sink: string[]) {
  return {
    async query(sqlOrConfig: string | pg.QueryConfig, params?: unknown[]) {
      // The worker's functions send a query config (db/statements.ts); EXPLAIN takes its text and values.
      const { text, values } = typeof sqlOrConfig === 'string' ? { text: sqlOrConfig, values: params } : sqlOrConfig;
      const r = await client.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${text}`, values);
      sink.push(...r.rows.map((x: Record<string, string>) => x['QUERY PLAN']!));
      return { rows: [] as never[] };
    },
  } as unknown as pg.PoolClient;
}

async function explains(url: string): Promise<void> {
  const pool = await bf.setup(url);
  const lockHolder = await pool.connect();
  const client = await pool.connect();
  try {
    await bf.enqueue(pool, bf.vipItems(2000), 'vip', 1000);
    await pool.query('VACUUM ANALYZE');
    const workerId = 'profile.1';
    await lockHolder.query(`SELECT pg_advisory_lock(hashtextextended('bundlefleet.worker.' || $1, 0))`, [workerId]);
    for (const limit of [1, 100]) {
      const plan: string[] = [];
      await client.query('BEGIN');
      await claimBundles(explaining(client, plan), { workerId, limit, leaseSeconds: 60 });
      await client.query('ROLLBACK');
      say(`### Claim, limit ${limit} (2,000 pending VIP bundles)`, );
      say('```', );
      say(plan.join('\n'));
      say('```');
    }
    // 100 running bundles, then one batched intent write for all of them.
    const claimed = await claimBundles(pool, { workerId, limit: 100, leaseSeconds: 60 });
    const writes = claimed.map((b) => ({
      fence: { bundleId: b.id, attempt: b.attempt, actor: workerId, leaseSeconds: 60 },
      position: 0,
      name: 'show_tickets',
      key: stepIdempotencyKey(b.id, 'show_tickets'),
      status: 'booking' as const,
      reference: null,
    }));
    for (const [what, batch] of [['1 intent write', writes.slice(0, 1)], ['100 intent writes in one statement', writes]] as const) {
      const plan: string[] = [];
      await client.query('BEGIN');
      await writeSteps(explaining(client, plan), [...batch]);
      await client.query('ROLLBACK');
      say(`### Step write: ${what}`);
      say('```');
      say(plan.join('\n'));
      say('```');
    }
  } finally {
    client.release();
    lockHolder.release();
    await pool.end();
  }
}

async function main(): Promise<void> {
  const adminUrl = await ensureEmbeddedPostgres({ home: HOME, settings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all' } });
  const name = `prof_${Date.now().toString(36)}`;
  await admin(adminUrl, `CREATE DATABASE ${name}`);
  await admin(adminUrl, `CREATE DATABASE ${name}_x`);
  const url = withDatabase(adminUrl, name);
  const sim = await startSimulator(0);
  try {
    const pool = await bf.setup(url);
    await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await bf.enqueue(pool, bf.vipItems(N), 'vip', 1000);
    await pool.query('ANALYZE');
    await pool.query('SELECT pg_stat_statements_reset()');
    await pool.query('SELECT pg_stat_reset()');
    const before = (await pool.query<{ x: string }>('SELECT xact_commit AS x FROM pg_stat_database WHERE datname = current_database()')).rows[0]!.x;
    const loadStart = load();
    const { seconds } = await bf.processAll(pool, url, N, { concurrency: Number(args.concurrency), providerUrls: { tickets: sim.url, flights: sim.url, taxis: sim.url } });
    await new Promise((r) => setTimeout(r, 700)); // pg_stat_database is flushed by backends about every second
    const after = (await pool.query<{ x: string }>('SELECT xact_commit AS x FROM pg_stat_database WHERE datname = current_database()')).rows[0]!.x;
    say(`## Profile of scenario 5a: ${N} VIP bundles, concurrency ${args.concurrency}, 0 ms provider latency`);
    say();
    say(`${(N / seconds).toFixed(0)} bundles/s; load average ${loadStart.join(' ')} → ${load().join(' ')}; ${((Number(after) - Number(before)) / N).toFixed(2)} committed transactions per bundle (pg_stat_database, includes the harness's polling).`);
    say();
    await tables(pool);
    say();
    await statements(pool);
    say();
    await pool.end();
    await explains(withDatabase(adminUrl, `${name}_x`));
  } finally {
    await sim.child.kill();
    await stopEmbeddedPostgres(HOME).catch(() => {});
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`profile failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
