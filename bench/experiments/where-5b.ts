/**
 * Where a bundle's time goes in scenario 5b (20 ms provider latency, concurrency 50): the in-process
 * worker's claims, step writes, finishes and provider calls are timed by wrapping their methods,
 * and each bundle's wall time (claim sent → finish acknowledged) is split into those parts. Changes
 * nothing in src/.
 *
 *   node --import tsx bench/experiments/where-5b.ts [--bundles 2000] [--concurrency 50] [--latency 20]
 */
import { parseArgs } from 'node:util';
import { startServer } from '../lib/server.js';
import { startSimulator } from '../lib/procs.js';
import { load, log, median } from '../lib/util.js';
import * as bf from '../systems/bundlefleet.js';
import { StepWriter } from '../../src/agents/step-writer.js';
import { Finisher } from '../../src/agents/finisher.js';
import { ProviderClient } from '../../src/providers/client.js';
import { Worker } from '../../src/scheduler/worker.js';

const { values: args } = parseArgs({ options: { bundles: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '50' }, latency: { type: 'string', default: '20' } } });
const N = Number(args.bundles);

const totals: Record<string, number[]> = {};
function timed<T extends object>(proto: T, method: string, label: string): void {
  const original = (proto as Record<string, (...a: unknown[]) => Promise<unknown>>)[method]!;
  (proto as Record<string, unknown>)[method] = async function (this: unknown, ...a: unknown[]) {
    const t0 = performance.now();
    try {
      return await original.apply(this, a);
    } finally {
      (totals[label] ??= []).push(performance.now() - t0);
    }
  };
}

async function main(): Promise<void> {
  timed(StepWriter.prototype, 'intent', 'step write: intent (with the previous outcome)');
  timed(StepWriter.prototype, 'booked', 'step write: outcome alone');
  timed(Finisher.prototype, 'finish', 'finish');
  for (const m of ['book', 'lookup', 'cancel'] as const) {
    for (const p of Object.getOwnPropertyNames(ProviderClient.prototype)) if (p.toLowerCase().includes(m)) timed(ProviderClient.prototype, p, `provider: ${p}`);
  }
  timed(Worker.prototype, 'claimOnce', 'claim (claimOnce: claim + side work)');

  const server = await startServer({ statements: false });
  const sim = await startSimulator(Number(args.latency));
  try {
    const url = await server.createDatabase('where5b');
    const pool = await bf.setup(url);
    await bf.enqueue(pool, bf.vipItems(N), 'vip', 1000);
    await pool.query('ANALYZE');
    const urls = { tickets: sim.url, flights: sim.url, taxis: sim.url };
    const loadStart = load();
    const { seconds } = await bf.processAll(pool, url, N, { concurrency: Number(args.concurrency), providerUrls: urls });
    const rate = N / seconds;
    process.stdout.write(`${N} bundles, concurrency ${args.concurrency}, latency ${args.latency} ms: ${rate.toFixed(0)}/s; each bundle held a slot ${((Number(args.concurrency) / rate) * 1000).toFixed(1)} ms on average (load ${loadStart.join(' ')} → ${load().join(' ')})\n`);
    for (const [label, xs] of Object.entries(totals)) {
      const sum = xs.reduce((a, b) => a + b, 0);
      process.stdout.write(`  ${label}: ${xs.length} calls (${(xs.length / N).toFixed(2)} per bundle), median ${median(xs).toFixed(2)} ms, p90 ${xs.sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!.toFixed(2)} ms, ${(sum / N).toFixed(1)} ms per bundle\n`);
    }
    await pool.end();
  } finally {
    await sim.child.kill();
    await server.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    log(`failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
