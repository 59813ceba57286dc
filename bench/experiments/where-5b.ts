/**
 * Where a bundle's time goes in scenario 5b (20 ms provider latency, concurrency 50): the in-process
 * worker's claims, step writes, finishes and provider calls are timed by wrapping their methods,
 * and each bundle's wall time (claim sent → finish acknowledged) is split into those parts. Changes
 * nothing in src/.
 *
 *   node --import tsx bench/experiments/where-5b.ts [--bundles 2000] [--concurrency 50] [--latency 20]
 */
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
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

/**
 * Each statement the worker sends, timed from the call to its reply on the worker's side (so it
 * includes the wait for the server and for this process's event loop), by its name, or by the
 * table it writes for an unnamed one; `rows`: the batch's size (its first array parameter).
 */
const statements: Record<string, { ms: number[]; rows: number[] }> = {};
function timeStatements(): void {
  const original = pg.Client.prototype.query as (...a: unknown[]) => unknown;
  (pg.Client.prototype as unknown as { query: unknown }).query = function (this: pg.Client, ...a: unknown[]) {
    const cfg = a[0] as string | { name?: string; text?: string; values?: unknown[] };
    const text = typeof cfg === 'string' ? cfg : cfg.text ?? '';
    const values = (typeof cfg === 'string' ? a[1] : cfg.values ?? a[1]) as unknown[] | undefined;
    const label = (typeof cfg === 'object' && cfg.name) || /INSERT INTO (\w+)|UPDATE (\w+)|^\s*(\w+)/.exec(text)?.slice(1).find(Boolean) || '?';
    const t0 = performance.now();
    const rows = Array.isArray(values?.[0]) ? (values[0] as unknown[]).length : 1;
    const done = () => {
      const s = (statements[label] ??= { ms: [], rows: [] });
      s.ms.push(performance.now() - t0);
      s.rows.push(rows);
    };
    // pg-pool's query() passes a callback (and gets no promise back).
    const last = a.length - 1;
    if (typeof a[last] === 'function') {
      const cb = a[last] as (...r: unknown[]) => void;
      a[last] = (...r: unknown[]) => {
        done();
        cb(...r);
      };
      return original.apply(this, a);
    }
    const result = original.apply(this, a);
    return result instanceof Promise ? result.finally(done) : result;
  };
}

async function main(): Promise<void> {
  timeStatements();
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
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
    for (const k of Object.keys(statements)) delete statements[k];
    loopDelay.enable();
    const { seconds } = await bf.processAll(pool, url, N, { concurrency: Number(args.concurrency), providerUrls: urls });
    loopDelay.disable();
    const rate = N / seconds;
    process.stdout.write(`${N} bundles, concurrency ${args.concurrency}, latency ${args.latency} ms: ${rate.toFixed(0)}/s; each bundle held a slot ${((Number(args.concurrency) / rate) * 1000).toFixed(1)} ms on average (load ${loadStart.join(' ')} → ${load().join(' ')})\n`);
    for (const [label, xs] of Object.entries(totals)) {
      const sum = xs.reduce((a, b) => a + b, 0);
      process.stdout.write(`  ${label}: ${xs.length} calls (${(xs.length / N).toFixed(2)} per bundle), median ${median(xs).toFixed(2)} ms, p90 ${xs.sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!.toFixed(2)} ms, ${(sum / N).toFixed(1)} ms per bundle\n`);
    }
    process.stdout.write(`  event loop delay: p50 ${(loopDelay.percentile(50) / 1e6).toFixed(2)} ms, p90 ${(loopDelay.percentile(90) / 1e6).toFixed(2)} ms, p99 ${(loopDelay.percentile(99) / 1e6).toFixed(2)} ms\n`);
    process.stdout.write('  statements (sent → reply, on the worker side):\n');
    for (const [label, s] of Object.entries(statements).sort((x, y) => y[1].ms.length - x[1].ms.length)) {
      process.stdout.write(`    ${label}: ${s.ms.length} (${(s.ms.length / N).toFixed(2)} per bundle), median ${median(s.ms).toFixed(2)} ms, p90 ${s.ms.sort((a, b) => a - b)[Math.floor(s.ms.length * 0.9)]!.toFixed(2)} ms, median batch ${median(s.rows)} rows\n`);
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
