/**
 * Where scenario 3's time goes (issue 12): bulk enqueue as the bench runs it (20,000 bundles in
 * batches of 5,000), on an embedded server with pg_stat_statements. Each variant is a schema change
 * is a source tree (this one, or another commit unpacked beside node_modules as for bench/ab.ts)
 * and optionally a schema change run after migrate; variants alternate within each rep on fresh
 * databases. Prints bundles/s, the statement time and WAL per bundle, and the top statements.
 *
 *   node --import tsx bench/experiments/where-enqueue.ts [--jobs 20000] [--reps 3] [--kind noop|vip]
 *     [--variant 'name=ROOT[:SQL]' ...]   (e.g. --variant 'no-updated-idx=.:DROP INDEX bundles_updated_idx',
 *                                          --variant before=/tmp/base --variant after=.)
 */
import { parseArgs } from 'node:util';
import { startServer } from '../lib/server.js';
import { load, now } from '../lib/util.js';
import { bundlefleetAt, parseVariants } from '../lib/variants.js';

const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    reps: { type: 'string', default: '3' },
    kind: { type: 'string', default: 'noop' },
    batch: { type: 'string', default: '5000' },
    variant: { type: 'string', multiple: true, default: [] },
  },
});
const N = Number(args.jobs);
const kind = args.kind as 'noop' | 'vip';
const variants = parseVariants(args.variant, 'as-is=.');

async function main(): Promise<void> {
  const server = await startServer({ statements: true });
  const results = new Map<string, { rate: number; stmtMs: number; walB: number }[]>();
  try {
    for (let rep = 1; rep <= Number(args.reps); rep++) {
      for (const { name, root, sql } of variants) {
        const bf = await bundlefleetAt(root);
        const url = await server.createDatabase('where_enqueue');
        const pool = await bf.setup(url);
        try {
          if (sql) await pool.query(sql);
          await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
          await pool.query('CHECKPOINT');
          await pool.query('SELECT pg_stat_statements_reset()');
          const items = kind === 'vip' ? bf.vipItems(N) : bf.noopItems(N);
          const wal0 = (await pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
          const t0 = now();
          await bf.enqueue(pool, items, kind, Number(args.batch));
          const seconds = (now() - t0) / 1000;
          const { rows } = await pool.query<{ total: number; wal: string }>(
            `SELECT coalesce(sum(total_exec_time), 0)::float8 AS total,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::text AS wal
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat_statements%'`,
            [wal0],
          );
          const top = await pool.query<{ query: string; calls: string; total: number }>(
            `SELECT regexp_replace(left(query, 90), '\\s+', ' ', 'g') AS query, calls, round(total_exec_time::numeric, 1)::float8 AS total
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'
             ORDER BY total_exec_time DESC LIMIT 4`,
          );
          for (const t of top.rows) console.log(`    ${t.calls} × ${t.total} ms  ${t.query}`);
          const r = { rate: N / seconds, stmtMs: rows[0]!.total, walB: Number(rows[0]!.wal) / N };
          (results.get(name) ?? results.set(name, []).get(name)!).push(r);
          console.log(`rep ${rep} ${name}: ${Math.round(r.rate)}/s, ${(seconds * 1000).toFixed(0)} ms wall, statements ${r.stmtMs.toFixed(0)} ms (${((r.stmtMs * 1000) / N).toFixed(1)} µs per bundle), WAL ${r.walB.toFixed(0)} B per bundle (load ${load().join(' ')})`);
        } finally {
          await pool.end();
          await server.dropDatabase(url);
        }
      }
    }
  } finally {
    await server.close();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`\n| variant | ${kind} bundles/s (median) | statement µs per bundle | WAL B per bundle |\n|---|---|---|---|`);
  for (const [name, rs] of results) {
    console.log(`| ${name} | ${Math.round(median(rs.map((r) => r.rate)))} | ${((median(rs.map((r) => r.stmtMs)) * 1000) / N).toFixed(1)} | ${median(rs.map((r) => r.walB)).toFixed(0)} |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
