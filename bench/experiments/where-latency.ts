/**
 * Where scenario 2's time goes (issue 12): one no-op bundle enqueued into an idle in-process
 * worker, as the bench measures it, with the path split at each hand-over: the enqueue's reply,
 * the NOTIFY's arrival on the worker's liveness connection, the claim statement's send and reply,
 * and the agent's start. The floor (bench/systems/floor.ts, with the same marks) and bundlefleet
 * with the enqueue's statement unnamed run beside it, one sample of each in turn, so that a
 * change in the machine's state falls on all of them alike.
 *
 *   node --import tsx bench/experiments/where-latency.ts [--samples 200]
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Worker } from '../../src/scheduler/worker.js';
import { enqueueBundles } from '../../src/bundles/enqueue.js';
import { createPool } from '../../src/db/pool.js';
import { allowNamedStatementsOnSession } from '../../src/db/session-probe.js';
import { startServer } from '../lib/server.js';
import { load, log, now, percentile, preSampleSleep, waitFor } from '../lib/util.js';
import * as bf from '../systems/bundlefleet.js';
import { benchLogger, NO_PROVIDERS } from '../systems/bundlefleet.js';
import { FLOOR_INSERT_SQL, openFloor } from '../systems/floor.js';

const { values: args } = parseArgs({ options: { samples: { type: 'string', default: '200' } } });
const N = Number(args.samples);

/** ms from the enqueue call to each mark. */
type Marks = Record<string, number>;
interface Sampler {
  name: string;
  sample(i: number): Promise<Marks>;
  close(): Promise<void>;
}

async function bundlefleetSamplers(url: string): Promise<Sampler[]> {
  const named = await bf.setup(url);
  await allowNamedStatementsOnSession(named, url); // as bench/systems/bundlefleet.ts latency()
  const unnamed = createPool(url, { max: 4 });
  let cur: Marks = {};
  const worker = new Worker({ databaseUrl: url, providerUrls: NO_PROVIDERS, logger: benchLogger, pollIntervalMs: 1000, onAgentStart: () => (cur.started ??= now()) });
  const internals = worker as unknown as { liveness: NodeJS.EventEmitter; pool: pg.Pool };
  internals.liveness.on('due', () => (cur.notified ??= now()));
  const query = internals.pool.query.bind(internals.pool) as (...a: unknown[]) => Promise<unknown>;
  (internals.pool as unknown as { query: unknown }).query = async (...a: unknown[]) => {
    const text = typeof a[0] === 'string' ? a[0] : (a[0] as { text: string }).text;
    const isClaim = text.includes('claimed AS (');
    if (isClaim) cur.claimSent ??= now();
    const r = await query(...a);
    if (isClaim) cur.claimed ??= now();
    return r;
  };
  worker.start();
  await waitFor('worker ready', () => worker.workerId !== undefined, { timeoutMs: 10_000 });
  const sampler = (name: string, pool: pg.Pool): Sampler => ({
    name,
    async sample(i) {
      cur = {};
      const t0 = now();
      await enqueueBundles(pool, [{ payload: { i } }], { kind: 'noop' });
      cur.enqueued = now();
      await waitFor('agent start', () => cur.started !== undefined, { intervalMs: 1, timeoutMs: 30_000 });
      return Object.fromEntries(Object.entries(cur).map(([k, v]) => [k, v - t0]));
    },
    async close() {
      await pool.end();
    },
  });
  const stop: Sampler = { name: '', sample: async () => ({}), close: async () => void (await worker.stop(5_000)) };
  return [sampler('bundlefleet', named), sampler('bundlefleet, enqueue unnamed', unnamed), stop];
}

/** bench/systems/floor.ts with marks: the insert's reply, the notification, the update's reply. */
async function floorSampler(url: string): Promise<Sampler> {
  let cur: Marks = {};
  let done: (() => void) | undefined;
  const floor = await openFloor(url, (_id, notifiedAt, updatedAt) => {
    cur.notified = notifiedAt;
    cur.updated = updatedAt;
    done?.();
  });
  return {
    name: 'floor',
    async sample() {
      cur = {};
      const updated = new Promise<void>((r) => (done = r));
      const t0 = now();
      await floor.sender.query(FLOOR_INSERT_SQL);
      cur.inserted = now();
      await updated;
      return Object.fromEntries(Object.entries(cur).map(([k, v]) => [k, v - t0]));
    },
    close: () => floor.close(),
  };
}

async function main(): Promise<void> {
  const server = await startServer();
  const samplers: Sampler[] = [];
  try {
    samplers.push(await floorSampler(await server.createDatabase('where_latency_floor')));
    samplers.push(...(await bundlefleetSamplers(await server.createDatabase('where_latency'))));
    const measured = samplers.filter((s) => s.name);
    const marks = new Map<string, Marks[]>(measured.map((s) => [s.name, []]));
    for (let i = 0; i < N + 3; i++) {
      for (const s of measured) {
        await preSampleSleep(1000);
        const m = await s.sample(i);
        if (i >= 3) marks.get(s.name)!.push(m);
      }
    }
    const p = (xs: number[], q: number) => percentile(xs, q).toFixed(2);
    console.log(`\nload ${load().join(' ')}; ${N} samples each, one of each in turn\n`);
    console.log('| system | mark (ms from the enqueue call) | p50 | p95 |\n|---|---|---|---|');
    for (const [name, ms] of marks) for (const k of Object.keys(ms[0]!)) console.log(`| ${name} | ${k} | ${p(ms.map((m) => m[k]!), 50)} | ${p(ms.map((m) => m[k]!), 95)} |`);
    const floor50 = percentile(marks.get('floor')!.map((m) => m.updated!), 50);
    for (const [name, ms] of marks) if (name !== 'floor') console.log(`\n${name}: p50 start ÷ floor p50 = ${(percentile(ms.map((m) => m.started!), 50) / floor50).toFixed(2)}`);
  } finally {
    for (const s of samplers.reverse()) await s.close().catch(() => {});
    await server.close();
  }
}

main().catch((err) => {
  log(`failed: ${(err as Error).stack}`);
  process.exit(1);
});
