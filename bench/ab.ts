/**
 * Before/after in one run (issue 12): scenario 5a or 5b for bundlefleet only, alternating between
 * variants on the same server, so that the load of a shared machine falls on all of them alike.
 * A variant is a source tree (a checkout of another commit, with node_modules beside it) and,
 * optionally, SQL applied after its migrations.
 *
 *   git archive BASE | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/node_modules
 *   node --import tsx bench/ab.ts --scenario 5a --bundles 1000 --reps 5 \
 *     --variant before=/tmp/base --variant after=. [--variant name=.:path/to/extra.sql]
 *
 * Prints each run and, per variant, the median bundles/s and its ratio to the first variant.
 */
import { parseArgs } from 'node:util';
import { startServer } from './lib/server.js';
import { bundlefleetAt, parseVariants } from './lib/variants.js';
import { startSimulator } from './lib/procs.js';
import { load, log, median, ownCpuSeconds } from './lib/util.js';
import { findPostmaster, processCpuSeconds, serverCpuSeconds } from './lib/server-cpu.js';

const { values: args } = parseArgs({
  options: {
    scenario: { type: 'string', default: '5a' },
    bundles: { type: 'string', default: '1000' },
    reps: { type: 'string', default: '5' },
    concurrency: { type: 'string' },
    variant: { type: 'string', multiple: true },
  },
});

const scenarios: Record<string, { latencyMs: number; concurrency: number }> = { '5a': { latencyMs: 0, concurrency: 100 }, '5b': { latencyMs: 20, concurrency: 50 } };
const sc = scenarios[args.scenario!];
if (!sc) throw new Error(`--scenario: one of ${Object.keys(scenarios).join(', ')}`);
const concurrency = Number(args.concurrency ?? sc.concurrency);
const N = Number(args.bundles);
const variants = parseVariants(args.variant, 'current=.');

async function main(): Promise<void> {
  const loadStart = load();
  const server = await startServer({ statements: true });
  const sim = await startSimulator(sc!.latencyMs);
  const rates = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  // Per bundle: worker (this process) CPU ms, statement execution ms (pg_stat_statements), WAL
  // bytes, statements — steadier than bundles/s on a shared machine.
  // And the CPU of the whole PostgreSQL server and of the simulator process (/proc), so the two
  // cores' budget per bundle is whole.
  const costs = new Map<string, { worker: number[]; server: number[]; wal: number[]; statements: number[]; serverCpu: number[]; simulatorCpu: number[] }>(
    variants.map((v) => [v.name, { worker: [], server: [], wal: [], statements: [], serverCpu: [], simulatorCpu: [] }]),
  );
  try {
    for (let rep = 0; rep < Number(args.reps); rep++) {
      // Rotate the order so that no variant always runs first (or last) in a repetition.
      const order = variants.map((_, i) => variants[(i + rep) % variants.length]!);
      for (const v of order) {
        const bf = await bundlefleetAt(v.root);
        const url = await server.createDatabase(`ab_${v.name}`);
        const pool = await bf.setup(url);
        try {
          if (v.sql) await pool.query(v.sql);
          await bf.enqueue(pool, bf.vipItems(N), 'vip', 1000);
          await pool.query('ANALYZE');
          await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
          await pool.query('SELECT pg_stat_statements_reset()');
          const lsn0 = (await pool.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
          const postmaster = await findPostmaster(pool);
          const serverCpu0 = postmaster ? serverCpuSeconds(postmaster) : NaN;
          const simulatorCpu0 = processCpuSeconds(sim.child.pid);
          // Read last: the /proc scans above are this process's CPU, not the worker's.
          const cpu0 = ownCpuSeconds();
          const urls = { tickets: sim.url, flights: sim.url, taxis: sim.url };
          const { seconds, outcomes } = await bf.processAll(pool, url, N, { concurrency, providerUrls: urls });
          if ((outcomes.completed ?? 0) !== N) throw new Error(`${v.name}: outcomes ${JSON.stringify(outcomes)}`);
          const c = costs.get(v.name)!;
          c.worker.push(((ownCpuSeconds() - cpu0) * 1000) / N);
          c.serverCpu.push(postmaster ? ((serverCpuSeconds(postmaster) - serverCpu0) * 1000) / N : NaN);
          c.simulatorCpu.push(((processCpuSeconds(sim.child.pid) - simulatorCpu0) * 1000) / N);
          // Statements of the worker only: the harness's own polling (count(*) on bundles) is left out.
          const st = (await pool.query<{ ms: number; calls: string }>(
            `SELECT coalesce(sum(total_exec_time), 0)::float8 AS ms, coalesce(sum(calls), 0) AS calls FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE 'SELECT count(*)::int AS n FROM bundles%'
               AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_current_wal_lsn%'`,
          )).rows[0]!;
          c.server.push(st.ms / N);
          c.statements.push(Number(st.calls) / N);
          c.wal.push(Number((await pool.query<{ b: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS b', [lsn0])).rows[0]!.b) / N);
          rates.get(v.name)!.push(N / seconds);
          log(`rep ${rep + 1} ${v.name}: ${(N / seconds).toFixed(0)} bundles/s, per bundle: worker CPU ${c.worker.at(-1)!.toFixed(2)} ms, server CPU ${c.serverCpu.at(-1)!.toFixed(2)} ms, simulator CPU ${c.simulatorCpu.at(-1)!.toFixed(2)} ms, statements ${c.statements.at(-1)!.toFixed(2)} taking ${c.server.at(-1)!.toFixed(2)} ms, WAL ${c.wal.at(-1)!.toFixed(0)} B/bundle (load ${load().join(' ')})`);
        } finally {
          await pool.end();
          await server.dropDatabase(url);
        }
      }
    }
  } finally {
    await sim.child.kill();
    await server.close();
  }
  const base = median(rates.get(variants[0]!.name)!);
  process.stdout.write(`scenario ${args.scenario} (${sc!.latencyMs} ms provider latency, concurrency ${concurrency}), ${N} bundles, ${args.reps} reps alternating; load ${loadStart.join(' ')} → ${load().join(' ')}\n`);
  for (const v of variants) {
    const r = rates.get(v.name)!;
    const c = costs.get(v.name)!;
    process.stdout.write(`${v.name}: median ${median(r).toFixed(0)}/s (${(median(r) / base).toFixed(2)}× ${variants[0]!.name}); runs ${r.map((x) => x.toFixed(0)).join(', ')}; per bundle: worker CPU ${median(c.worker).toFixed(2)} ms, server CPU ${median(c.serverCpu).toFixed(2)} ms, simulator CPU ${median(c.simulatorCpu).toFixed(2)} ms, statements ${median(c.statements).toFixed(2)} taking ${median(c.server).toFixed(2)} ms, WAL ${median(c.wal).toFixed(0)} B\n`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`ab failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
