/**
 * The floor for scenario 2 (enqueue one → start, idle worker): what two commits and a
 * notification cost on this server with plain `pg` and nothing else. One autocommitted statement
 * inserts a row and NOTIFYs (commit 1); a client LISTENing on its own connection receives it and
 * commits an UPDATE of that row to `running` (commit 2); the clock runs from just before the
 * insert to the UPDATE's reply, in the same process. No queue does less than this.
 */
import pg from 'pg';
import { now, preSampleSleep } from '../lib/util.js';

export async function latency(url: string, samples: number, warmups = 3, pollIntervalMs = 1000): Promise<number[]> {
  const sender = new pg.Client({ connectionString: url });
  const listener = new pg.Client({ connectionString: url });
  await sender.connect();
  await listener.connect();
  const waiting = new Map<string, (t: number) => void>();
  try {
    await sender.query('CREATE TABLE floor_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, state text NOT NULL)');
    listener.on('notification', (msg) => {
      const id = msg.payload!;
      void listener.query("UPDATE floor_jobs SET state = 'running' WHERE id = $1", [id]).then(() => waiting.get(id)?.(now()));
    });
    await listener.query('LISTEN floor_jobs');
    const out: number[] = [];
    for (let i = 0; i < warmups + samples; i++) {
      // The same random pause as every other system's samples, so the server is as idle.
      await preSampleSleep(pollIntervalMs);
      // One sender on a fresh table: the i-th insert gets id i + 1, so the wait is registered
      // before the insert (its notification may arrive before the insert's own reply).
      const id = String(i + 1);
      const t0 = now();
      const started = new Promise<number>((resolve) => waiting.set(id, resolve));
      await sender.query(`WITH ins AS (INSERT INTO floor_jobs (state) VALUES ('pending') RETURNING id) SELECT pg_notify('floor_jobs', id::text) FROM ins`);
      const ms = (await started) - t0;
      waiting.delete(id);
      if (i >= warmups) out.push(ms);
    }
    return out;
  } finally {
    await sender.end();
    await listener.end();
  }
}
