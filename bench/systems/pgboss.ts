/**
 * pg-boss 10 in-process: jobs inserted with its bulk API (insert), processed by work() with a
 * batch size; "all finished" is every job of the queue in state `completed`.
 */
import pg from 'pg';
import PgBoss from 'pg-boss';
import { now, preSampleSleep, sleep, waitFor } from '../lib/util.js';

export const QUEUE = 'noop';

export async function setup(url: string): Promise<{ boss: PgBoss; pool: pg.Pool }> {
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false });
  boss.on('error', (err) => process.stderr.write(`pg-boss: ${err.message}\n`));
  await boss.start();
  await boss.createQueue(QUEUE);
  return { boss, pool: new pg.Pool({ connectionString: url, max: 4 }) };
}

export async function enqueue(boss: PgBoss, n: number): Promise<number> {
  const jobs = Array.from({ length: n }, (_, i) => ({ name: QUEUE, data: { i } }));
  const t0 = now();
  await boss.insert(jobs);
  return (now() - t0) / 1000;
}

async function completed(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'`, [QUEUE]);
  return rows[0]!.n;
}

/**
 * Processes with pg-boss's own fetch → handler → complete cycle, batchSize jobs at a time, one
 * loop (what work() does, without its sleep). work() itself sleeps its polling interval (at least
 * 0.5 s) after every batch shorter than that, which caps it at batchSize ÷ 0.5 s (200/s at 100,
 * 2,000/s at 1000); the loop measures what pg-boss can do, as the reference figures do.
 */
export async function processAll(boss: PgBoss, pool: pg.Pool, n: number, batchSize: number): Promise<number> {
  let done = 0;
  const handler = async (jobs: PgBoss.Job<unknown>[]) => {
    done += jobs.length;
  };
  const t0 = now();
  while (done < n) {
    const jobs = await boss.fetch(QUEUE, { batchSize });
    if (!jobs?.length) {
      await sleep(5);
      continue;
    }
    await handler(jobs);
    await boss.complete(QUEUE, jobs.map((j) => j.id));
  }
  await waitFor('all completed', async () => (await completed(pool)) >= n, { intervalMs: 2, timeoutMs: 60_000 });
  return (now() - t0) / 1000;
}

/** work() with batchSize and its minimum polling interval, for comparison with the loop. */
export async function processWithWork(boss: PgBoss, pool: pg.Pool, n: number, batchSize: number): Promise<number> {
  let done = 0;
  const t0 = now();
  const id = await boss.work(QUEUE, { batchSize, pollingIntervalSeconds: 0.5 }, async (jobs) => {
    done += jobs.length;
  });
  try {
    await waitFor('in-process handlers', () => done >= n, { intervalMs: 2, timeoutMs: 900_000 });
    await waitFor('all completed', async () => (await completed(pool)) >= n, { intervalMs: 2, timeoutMs: 60_000 });
    return (now() - t0) / 1000;
  } finally {
    await boss.offWork({ id } as never);
  }
}

/** Enqueue one (send) → handler start, idle worker polling every `pollSeconds` (0.5 s is its minimum). */
export async function latency(boss: PgBoss, samples: number, pollSeconds = 0.5, warmups = 3): Promise<number[]> {
  const started = new Map<number, number>();
  await boss.work(QUEUE, { batchSize: 1, pollingIntervalSeconds: pollSeconds }, async ([job]) => {
    started.set((job!.data as { i: number }).i, now());
  });
  const out: number[] = [];
  try {
    for (let i = 0; i < warmups + samples; i++) {
      await preSampleSleep(pollSeconds * 1000);
      const t0 = now();
      await boss.send(QUEUE, { i });
      await waitFor('handler start', () => started.has(i), { intervalMs: 1, timeoutMs: 30_000 });
      if (i >= warmups) out.push(started.get(i)! - t0);
    }
  } finally {
    await boss.offWork(QUEUE);
  }
  return out;
}
