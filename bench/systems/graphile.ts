/**
 * graphile-worker 0.16 in-process: jobs added with its bulk SQL API (graphile_worker.add_jobs),
 * processed by run() with a no-op task. Completed jobs are deleted, so "all finished" is an
 * empty jobs table.
 */
import pg from 'pg';
import { Logger, makeWorkerUtils, run, runMigrations } from 'graphile-worker';
import { now, waitFor, type LatencySampler } from '../lib/util.js';

/** Errors only. */
export const quietLogger = new Logger(() => (level, message) => {
  if (level === 'error') process.stderr.write(`graphile-worker: ${message}\n`);
});

export async function setup(url: string): Promise<pg.Pool> {
  await runMigrations({ connectionString: url, logger: quietLogger });
  return new pg.Pool({ connectionString: url, max: 4 });
}

/** add_jobs with every job in one call, payload {i}. */
export async function enqueue(pool: pg.Pool, n: number): Promise<number> {
  const specs = JSON.stringify(Array.from({ length: n }, (_, i) => ({ identifier: 'noop', payload: { i } })));
  const t0 = now();
  await pool.query(
    `SELECT count(*) FROM graphile_worker.add_jobs(
       ARRAY(SELECT s FROM json_populate_recordset(NULL::graphile_worker.job_spec, $1::json) s))`,
    [specs],
  );
  return (now() - t0) / 1000;
}

async function remaining(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
  return rows[0]!.n;
}

export async function processAll(pool: pg.Pool, url: string, n: number, concurrency: number): Promise<number> {
  let done = 0;
  // Its own pool (graphile-worker's default size, 10): see latency() below.
  const pgPool = new pg.Pool({ connectionString: url, max: 10 });
  pgPool.on('error', () => {});
  const t0 = now();
  const runner = await run({
    pgPool,
    concurrency,
    noHandleSignals: true,
    logger: quietLogger,
    taskList: {
      noop: async () => {
        done++;
      },
    },
  });
  try {
    await waitFor('in-process handlers', () => done >= n, { intervalMs: 2, timeoutMs: 600_000 });
    await waitFor('jobs table empty', async () => (await remaining(pool)) === 0, { intervalMs: 2, timeoutMs: 60_000 });
    return (now() - t0) / 1000;
  } finally {
    await runner.stop();
    await pgPool.end();
  }
}

/** Enqueue one (workerUtils.addJob) → handler start, idle worker (LISTEN/NOTIFY, 2 s poll). */
export async function latencySampler(url: string): Promise<LatencySampler> {
  const pollInterval = 2000;
  const started = new Map<number, number>();
  // Its own pool (graphile-worker's default size, 10), so that a connection the server ends while
  // the database is dropped after the run is an error we ignore, not an unhandled 'error' event
  // that ends the benchmark (seen twice under a load average of 19–25, here and in processAll).
  const pgPool = new pg.Pool({ connectionString: url, max: 10 });
  pgPool.on('error', () => {});
  const runner = await run({
    pgPool,
    concurrency: 10,
    pollInterval,
    noHandleSignals: true,
    logger: quietLogger,
    taskList: {
      noop: async (payload) => {
        started.set((payload as { i: number }).i, now());
      },
    },
  });
  const utils = await makeWorkerUtils({ pgPool, logger: quietLogger });
  await utils.addJob('noop', { i: -1 });
  await waitFor('worker ready', () => started.has(-1), { timeoutMs: 30_000 });
  return {
    pollIntervalMs: pollInterval,
    async sample(i) {
      const t0 = now();
      await utils.addJob('noop', { i });
      await waitFor('handler start', () => started.has(i), { intervalMs: 1, timeoutMs: 30_000 });
      return started.get(i)! - t0;
    },
    async close() {
      await utils.release();
      await runner.stop();
      await pgPool.end();
    },
  };
}
