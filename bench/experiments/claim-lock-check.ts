/**
 * What the claim's liveness check costs (issue 12; issue 9 made the claim check that its worker
 * holds its liveness lock). Times the claim statement, limit 1 and 100, on a held connection with
 * 5,000 pending bundles, alternating between:
 *   pg_locks  the check as it was first written (EXISTS over pg_locks), which copies every lock
 *             and every backend's fast-path slots
 *   shared    the claim as src/scheduler/claim.ts sends it: `NOT pg_try_advisory_xact_lock_shared(key)`,
 *             true exactly when another session holds the key exclusively — one lock-table probe
 *   none      no check (reference only: not a proposal)
 * Each claim runs in a transaction that is rolled back, so every sample sees the same table.
 *   node --import tsx bench/experiments/claim-lock-check.ts [--samples 300]
 * Nothing in src/ changes.
 */
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { claimBundles } from '../../src/scheduler/claim.js';
import { workerLockHeld, workerLockHeldElsewhere, workerLockKey } from '../../src/bundles/worker-locks.js';
import { startServer } from '../lib/server.js';
import * as bf from '../systems/bundlefleet.js';
import { load, now, percentile } from '../lib/util.js';

const { values: args } = parseArgs({ options: { samples: { type: 'string', default: '300' } } });
const samples = Number(args.samples);

async function main(): Promise<void> {
  const server = await startServer();
  const url = await server.createDatabase('claimcheck');
  const pool = await bf.setup(url);
  try {
    await bf.enqueue(pool, bf.noopItems(5000), 'noop', 5000);
    await pool.query('VACUUM ANALYZE');
    const workerId = 'claimcheck.1';
    const holder = await pool.connect();
    await holder.query(`SELECT pg_advisory_lock(${workerLockKey('$1')})`, [workerId]);
    // The claim's own text, as claimBundles sends it.
    let current = '';
    await claimBundles({ query: async (sql: string) => ((current = sql), { rows: [] }) } as unknown as pg.Pool, { workerId, limit: 1, leaseSeconds: 60 });
    const check = workerLockHeldElsewhere('$2');
    if (!current.includes(check)) throw new Error('the claim no longer contains the liveness check this experiment replaces');
    const variants: Record<string, string> = {
      pg_locks: current.replace(check, workerLockHeld('$2')),
      shared: current,
      none: current.replace(check, 'true'),
    };
    const client = await pool.connect();
    const backends = (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity')).rows[0]!.n;
    const maxConnections = (await client.query<{ s: string }>(`SELECT current_setting('max_connections') AS s`)).rows[0]!.s;
    process.stdout.write(`claim statement, held connection, 5,000 pending noop bundles, ${samples} samples each, alternating; max_connections ${maxConnections}, ${backends} backends; load ${load().join(' ')}\n`);
    for (const limit of [1, 100]) {
      const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
      for (let i = 0; i < samples + 20; i++) {
        for (const [name, sql] of Object.entries(variants)) {
          await client.query('BEGIN');
          const t0 = now();
          const { rows } = await client.query(sql, [limit, workerId, 60, ['noop'], [1]]);
          const ms = now() - t0;
          await client.query('ROLLBACK');
          if (rows.length !== limit) throw new Error(`${name}: claimed ${rows.length}, expected ${limit}`);
          if (i >= 20) times[name]!.push(ms);
        }
      }
      // The shared-lock form must refuse a worker whose lock is gone, as the current one does.
      for (const [name, sql] of Object.entries(variants)) {
        if (name === 'none') continue;
        await client.query('BEGIN');
        const { rows } = await client.query(sql, [limit, 'claimcheck.gone', 60, ['noop'], [1]]);
        await client.query('ROLLBACK');
        if (rows.length !== 0) throw new Error(`${name}: claimed for a worker without its lock`);
      }
      for (const [name, t] of Object.entries(times)) {
        process.stdout.write(`limit ${limit} ${name}: p50 ${percentile(t, 50).toFixed(3)} ms, p95 ${percentile(t, 95).toFixed(3)} ms\n`);
      }
    }
    client.release();
    holder.release();
    process.stdout.write(`load at end ${load().join(' ')}\n`);
  } finally {
    await pool.end();
    await server.dropDatabase(url);
    await server.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
