/**
 * The floor for scenario 2 (enqueue one → start, idle worker): what two commits and a
 * notification cost on this server with plain `pg` and nothing else. One autocommitted statement
 * inserts a row and NOTIFYs (commit 1); a client LISTENing on its own connection receives it and
 * commits an UPDATE of that row to `running` (commit 2); the clock runs from just before the
 * insert to the UPDATE's reply, in the same process. No queue does less than this.
 */
import pg from 'pg';
import { now, type LatencySampler } from '../lib/util.js';

/** The insert that is commit 1: the row and its NOTIFY in one autocommitted statement. */
export const FLOOR_INSERT_SQL = `WITH ins AS (INSERT INTO floor_jobs (state) VALUES ('pending') RETURNING id) SELECT pg_notify('floor_jobs', id::text) FROM ins`;

/**
 * The floor's two connections on a fresh table: `sender` inserts; the listener, on each
 * notification, commits the UPDATE (commit 2) and reports the row's id with the moments the
 * notification arrived and the UPDATE's reply came back.
 */
export async function openFloor(url: string, onUpdated: (id: string, notifiedAt: number, updatedAt: number) => void): Promise<{ sender: pg.Client; close(): Promise<void> }> {
  const sender = new pg.Client({ connectionString: url });
  const listener = new pg.Client({ connectionString: url });
  // The database is dropped after the run: a connection the server ends then is no error of ours.
  sender.on('error', () => {});
  listener.on('error', () => {});
  await sender.connect();
  await listener.connect();
  await sender.query('CREATE TABLE floor_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, state text NOT NULL)');
  listener.on('notification', (msg) => {
    const id = msg.payload!;
    const notifiedAt = now();
    void listener.query("UPDATE floor_jobs SET state = 'running' WHERE id = $1", [id]).then(() => onUpdated(id, notifiedAt, now()));
  });
  await listener.query('LISTEN floor_jobs');
  return {
    sender,
    async close() {
      await sender.end();
      await listener.end();
    },
  };
}

export async function latencySampler(url: string, pollIntervalMs = 1000): Promise<LatencySampler> {
  const waiting = new Map<string, (t: number) => void>();
  const floor = await openFloor(url, (id, _notifiedAt, updatedAt) => waiting.get(id)?.(updatedAt));
  let inserted = 0;
  return {
    pollIntervalMs,
    async sample() {
      // One sender on a fresh table: the n-th insert gets id n, so the wait is registered before
      // the insert (its notification may arrive before the insert's own reply).
      const id = String(++inserted);
      const started = new Promise<number>((resolve) => waiting.set(id, resolve));
      const t0 = now();
      await floor.sender.query(FLOOR_INSERT_SQL);
      const ms = (await started) - t0;
      waiting.delete(id);
      return ms;
    },
    close: () => floor.close(),
  };
}
