/**
 * Where scenario 1's CPU goes (issue 12): no-op bundles through the in-process worker as the bench
 * runs them, on an embedded server with pg_stat_statements. Prints jobs/s, CPU per 1,000 jobs of
 * this process and of the server (/proc), statements per job and time per statement, and row
 * writes per table (inserts, updates, HOT updates).
 *
 *   node --import tsx bench/experiments/where-noop.ts [--jobs 20000] [--reps 2]
 *   node --import tsx bench/experiments/where-noop.ts --sql 'DROP INDEX …'   (a schema change to try, run after migrate)
 *   node --cpu-prof --cpu-prof-dir=bench/results/tmp/prof --import tsx bench/experiments/where-noop.ts
 */
import { parseArgs } from 'node:util';
import { startServer } from '../lib/server.js';
import { findPostmaster, serverCpuSeconds } from '../lib/server-cpu.js';
import { load, log, now, ownCpuSeconds } from '../lib/util.js';
import * as bf from '../systems/bundlefleet.js';

const { values: args } = parseArgs({ options: { jobs: { type: 'string', default: '20000' }, reps: { type: 'string', default: '2' }, sql: { type: 'string' } } });
const N = Number(args.jobs);

async function main(): Promise<void> {
  const server = await startServer({ statements: true });
  try {
    for (let rep = 1; rep <= Number(args.reps); rep++) {
      const url = await server.createDatabase('where_noop');
      const pool = await bf.setup(url);
      try {
        if (args.sql) await pool.query(args.sql);
        const t0 = now();
        await bf.enqueue(pool, bf.noopItems(N), 'noop', 5000);
        const enqueueRate = N / ((now() - t0) / 1000);
        await pool.query('ANALYZE');
        await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        await pool.query('SELECT pg_stat_statements_reset()');
        await pool.query('SELECT pg_stat_reset()');
        const pm = (await findPostmaster(pool))!;
        const [own0, srv0] = [ownCpuSeconds(), serverCpuSeconds(pm)];
        const { seconds } = await bf.processAll(pool, url, N, { concurrency: 1000, claimBatchSize: 500 });
        await new Promise((r) => setTimeout(r, 300)); // let the worker's backends be reaped (server-cpu.ts)
        const [own1, srv1] = [ownCpuSeconds(), serverCpuSeconds(pm)];
        const per = (s: number) => ((s / N) * 1000).toFixed(3);
        console.log(`\n## rep ${rep}: enqueue ${Math.round(enqueueRate)}/s, process ${Math.round(N / seconds)}/s; CPU per 1,000 jobs: this process ${per(own1 - own0)} s, server ${per(srv1 - srv0)} s (load ${load().join(' ')})\n`);
        const { rows } = await pool.query<{ query: string; calls: string; total: number; rows: string; wal: string }>(
          `SELECT regexp_replace(left(query, 120), '\\s+', ' ', 'g') AS query, calls, round(total_exec_time::numeric, 1)::float8 AS total, rows, wal_bytes AS wal
           FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 8`,
        );
        console.log('| calls | total ms | µs per job | rows | WAL bytes per job | statement |\n|---|---|---|---|---|---|');
        for (const r of rows) console.log(`| ${r.calls} | ${r.total} | ${((r.total * 1000) / N).toFixed(1)} | ${r.rows} | ${(Number(r.wal) / N).toFixed(0)} | \`${r.query.replace(/\|/g, '\\|')}\` |`);
        const t = await pool.query(`SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd > 0 ORDER BY relname`);
        console.log('\n| table | inserts | updates | HOT |\n|---|---|---|---|');
        for (const r of t.rows) console.log(`| ${r.relname} | ${r.n_tup_ins} | ${r.n_tup_upd} | ${r.n_tup_hot_upd} |`);
      } finally {
        await pool.end();
        await server.dropDatabase(url);
      }
    }
  } finally {
    await server.close();
  }
}

main().catch((err) => {
  log(String(err?.stack ?? err));
  process.exit(1);
});
