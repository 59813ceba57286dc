/**
 * `npm run bench` (issue #5): every scenario against bundlefleet and, where it applies, pg-boss and
 * graphile-worker on the same PostgreSQL in the same run. Writes bench/results/latest.{json,md,svg}.
 *
 *   npm run bench                      full run (about 20–25 min on 2 cores)
 *   npm run bench -- --quick           small sizes, under two minutes
 *   npm run bench -- --only 1,2        some scenarios (1 and 3 share their runs)
 *   npm run bench -- --out bench/results/tmp/x   write elsewhere (latest.* stay untouched)
 *   npm run bench -- --only 5 --no-tracing-row   scenario 5 without its 5a-otel row (tracing on vs off)
 * Profile: node --cpu-prof --cpu-prof-dir=bench/results/tmp/prof --import tsx bench/run.ts --quick --only 1
 * DATABASE_URL: use that server (the role needs CREATEDB); otherwise an embedded PostgreSQL
 * under bench/results/tmp/pg, stopped at the end.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startServer } from './lib/server.js';
import { load, log, machine, now, packageVersion } from './lib/util.js';
import { markdown, svg, type Report } from './report.js';
import * as sc from './scenarios.js';
import { scenario5Tracing } from './tracing.js';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string' },
    'noop-concurrency': { type: 'string' },
    'enqueue-batch': { type: 'string' },
    'vip-concurrency': { type: 'string' },
    'claim-batch': { type: 'string' },
    systems: { type: 'string' },
    jobs: { type: 'string' },
    reps: { type: 'string' },
    'no-tracing-row': { type: 'boolean', default: false },
  },
});

const quick = args.quick!;
const cfg: sc.Config = quick
  ? { quick, jobs: 2_000, reps: 1, noopConcurrency: 1000, enqueueBatch: 5000, latencySamples: 10, vipBundles: 300, vipReps: 1, vipConcurrencyZero: 100, finishedRows: 100_000, claimSamples: 200, recoveryBundles: 10, recoveryReps: 1, rssBundles: 500, systems: new Set(), noopClaimBatch: 500 }
  : { quick, jobs: 20_000, reps: 3, noopConcurrency: 1000, enqueueBatch: 5000, latencySamples: 200, vipBundles: 3_000, vipReps: 3, vipConcurrencyZero: 100, finishedRows: 1_000_000, claimSamples: 500, recoveryBundles: 20, recoveryReps: 5, rssBundles: 3_000, systems: new Set(), noopClaimBatch: 500 };
if (args['noop-concurrency']) cfg.noopConcurrency = Number(args['noop-concurrency']);
if (args['enqueue-batch']) cfg.enqueueBatch = Number(args['enqueue-batch']);
if (args.jobs) cfg.jobs = Number(args.jobs);
if (args.reps) cfg.reps = Number(args.reps);
if (args['claim-batch']) cfg.noopClaimBatch = Number(args['claim-batch']);
cfg.systems = new Set((args.systems ?? 'bundlefleet,pg-boss,graphile-worker,dbos').split(','));
if (args['vip-concurrency']) cfg.vipConcurrencyZero = Number(args['vip-concurrency']);
const only = new Set((args.only ?? '1,2,3,4,5,6,7').split(',').map((s) => s.trim()));
const outDir = args.out ? `${args.out.replace(/\/$/, '')}/` : fileURLToPath(new URL('./results/', import.meta.url));

async function main(): Promise<void> {
  const started = now();
  const loadStart = load();
  const server = await startServer();
  const pgInfo = await server.info();
  log(`PostgreSQL ${pgInfo.server_version} (${server.embedded ? 'embedded' : 'DATABASE_URL'}), ${quick ? 'quick' : 'full'} run, scenarios ${[...only].join(',')}`);
  const results: sc.ScenarioResult[] = [];
  try {
    let runs: Awaited<ReturnType<typeof sc.noopRuns>> | undefined;
    if (only.has('1') || only.has('3')) runs = await sc.noopRuns(server, cfg);
    if (only.has('1')) results.push(sc.scenario1(runs!, cfg));
    if (only.has('2')) results.push(await sc.scenario2(server, cfg));
    const s5: sc.ScenarioResult[] = [];
    if (only.has('5')) {
      const r = await sc.scenario5(server, cfg);
      s5.push(...r.results);
      // 5a with tracing on vs off (issue 11), skipped with --no-tracing-row.
      if (!args['no-tracing-row']) s5.push(await scenario5Tracing(server, cfg));
    }
    if (only.has('3')) results.push(sc.scenario3(runs!, cfg));
    if (only.has('4')) results.push(await sc.scenario4(server, cfg));
    results.push(...s5);
    if (only.has('6')) results.push(await sc.scenario6(server, cfg));
    if (only.has('7')) results.push(await sc.scenario7(server, cfg));
  } finally {
    await server.close();
  }
  results.sort((a, b) => a.id.localeCompare(b.id));
  const loadEnd = load();
  const report: Report = {
    generated_at: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    duration_seconds: (now() - started) / 1000,
    machine: machine(),
    postgres: { embedded: server.embedded, ...pgInfo },
    versions: { bundlefleet: packageVersion('bundlefleet'), 'pg-boss': packageVersion('pg-boss'), 'graphile-worker': packageVersion('graphile-worker'), '@dbos-inc/dbos-sdk': packageVersion('@dbos-inc/dbos-sdk'), pg: packageVersion('pg'), node: process.version },
    load: {
      start: loadStart,
      end: loadEnd,
      note: 'Server, Node and load share the same cores; the load average shows whether anything else ran (on 2 cores, a 1-minute load above ~1 before the start means another load was present).',
    },
    config: { ...cfg, systems: [...cfg.systems], only: [...only] },
    scenarios: results,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(`${outDir}latest.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${outDir}latest.md`, markdown(report));
  writeFileSync(`${outDir}latest.svg`, svg(report));
  process.stdout.write(markdown(report));
  log(`wrote ${outDir}latest.json, latest.md, latest.svg`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
