/**
 * A worker process started while PostgreSQL is down (restarting, or not up yet after a host
 * reboot) waits for it and then works, instead of exiting; a one-shot command fails at once.
 */
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, startSimulator, waitFor } from './support/fleet.js';
import { cli, spawnWorker } from './support/processes.js';
import { startTcpProxy } from '../src/chaos/tcp-proxy.js';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe('worker start-up', () => {
  it('waits for a database that is not reachable yet, then books', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const port = await freePort();
    const target = new URL(db.url);
    const throughProxy = new URL(db.url);
    throughProxy.port = String(port);
    // Nothing listens on that port yet: connections are refused.
    const oneShot = await cli(throughProxy.toString(), ['stats']);
    expect(oneShot.code).toBe(1);
    expect(oneShot.stderr).toMatch(/cannot reach PostgreSQL/);
    const worker = spawnWorker(throughProxy.toString(), sim.url, 'early-bird');
    await new Promise((r) => setTimeout(r, 2_500));
    expect(worker.child.exitCode).toBeNull();
    const proxy = await startTcpProxy(target.hostname, Number(target.port), port);
    onCleanup(() => proxy.close());
    const [b] = await enqueueVip(db.pool, 1);
    await waitFor('the bundle completed', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [b!.vip_bundle_id])).rows[0].state === 'completed', 20_000);
  });
});
