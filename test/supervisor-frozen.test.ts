/**
 * Issue 9, item 4, against a real process: a `supervise --loop` whose alert webhook never answers
 * is SIGSTOPped (a frozen VM, a long GC). Another supervisor must still recover bundles within
 * seconds: alerts are posted outside the fleet-wide lease, and a frozen holder loses the lease when
 * it expires (a session lock would stay held: the frozen process's kernel keeps the socket open).
 */
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { claimAs, enqueueVip, quietLogger, waitFor } from './support/fleet.js';
import { BIN, cliEnv } from './support/processes.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { runOnce } from '../src/supervisor/supervisor.js';

/** A webhook that accepts connections and never answers. */
async function silentWebhook(): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => void sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
}

describe('a frozen supervisor', () => {
  it('does not stop recovery: another supervisor resets an expired lease within seconds', async () => {
    const db = await createTestDb();
    // Pending bundles nobody runs: stuck alerts whose delivery hangs.
    await enqueueBundles(db.pool, Array.from({ length: 20 }, (_, i) => ({ payload: { i } })), { kind: 'noop' });
    const env = { ...cliEnv(db.url), ALERT_WEBHOOK_URL: await silentWebhook(), BUNDLEFLEET_SUPERVISOR_LEASE_SECONDS: '2' };
    const child = spawn(process.execPath, [BIN, 'supervise', '--loop', '--interval-seconds', '0.2', '--stuck-after-seconds', '1'], { env, stdio: 'ignore' });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    onCleanup(async () => {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    });
    await waitFor('stuck alerts raised', async () => {
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM alerts`);
      return rows[0].n > 0;
    }, 20_000);
    await new Promise((r) => setTimeout(r, 1_000)); // their posts are hanging now
    child.kill('SIGSTOP');

    // A bundle whose worker lives but whose lease runs out.
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(`UPDATE bundles SET next_run_at = now() + interval '1 hour' WHERE kind = 'noop'`);
    const [claimed] = await claimAs(db.pool, { workerId: 'slow-worker', limit: 1, leaseSeconds: 1 });
    expect(claimed!.id).toBe(b!.vip_bundle_id);
    await new Promise((r) => setTimeout(r, 1_100));

    const started = Date.now();
    await waitFor('another supervisor to reset the expired lease', async () => {
      const report = await runOnce(db.pool, { logger: quietLogger(), leaseSeconds: 2, backoffBaseSeconds: 0.05 });
      return report.expired >= 1;
    }, 8_000);
    expect(Date.now() - started).toBeLessThan(8_000);
    const { rows } = await db.pool.query('SELECT state, reset_count FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    expect(rows[0]).toMatchObject({ state: 'pending', reset_count: 1 });
  });
});
