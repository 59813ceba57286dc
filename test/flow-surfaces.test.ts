/**
 * Where flow control shows (issue 13): the worker's flags refuse bad values with exit 2 naming the
 * flag; `stats` (text and JSON) and /metrics show the limits, slots in use, pauses and parked
 * bundles; the supervisor raises no stuck alert for a bundle that only waits for a provider window,
 * until that wait itself passes --stuck-after-seconds.
 */
import { execFile, spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, quietLogger } from './support/fleet.js';
import { BIN, cli, cliEnv } from './support/processes.js';
import { pauseKind, publishLimits } from '../src/providers/limits.js';
import { createMetrics } from '../src/http/metrics.js';
import { runOnce } from '../src/supervisor/supervisor.js';

function worker(url: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'worker', ...args], { env: cliEnv(url, { PROVIDERS_URL: 'http://127.0.0.1:9', ...env }), timeout: 20_000 }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stderr });
    });
  });
}

describe('worker flow-control flags', () => {
  it('refuse bad values with exit 2, naming the flag, the item and the reason', async () => {
    const db = await createTestDb();
    const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
      [['--provider-rate', 'flights=fast'], {}, /--provider-rate \(BUNDLEFLEET_PROVIDER_RATE\): flights: must be calls per second, like flights=50\/s \(got "fast"\)/],
      [['--provider-rate', 'flights=0/s'], {}, /--provider-rate .*flights: must be more than 0\/s/],
      [['--provider-concurrency', 'boats=3'], {}, /--provider-concurrency \(BUNDLEFLEET_PROVIDER_CONCURRENCY\): unknown provider kind "boats" \(one of tickets, flights, taxis\)/],
      [['--provider-concurrency', 'tickets=20,tickets=3'], {}, /tickets given twice/],
      [['--provider-concurrency', 'flights'], {}, /"flights" must look like tickets=20,flights=10/],
      [['--provider-concurrency', 'flights=1.5'], {}, /flights: must be a whole number of calls in flight/],
      [[], { BUNDLEFLEET_PROVIDER_CONCURRENCY: 'flights=0' }, /--provider-concurrency \(BUNDLEFLEET_PROVIDER_CONCURRENCY\): flights: must be between 1 and 10000/],
      [['--provider-circuit', 'often'], {}, /--provider-circuit \(BUNDLEFLEET_PROVIDER_CIRCUIT\): "often" must look like 5\/10s/],
    ];
    for (const [args, env, message] of cases) {
      const run = await worker(db.url, args, env);
      expect(run.code, `${args.join(' ')} ${JSON.stringify(env)}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(message);
    }
    // Nothing was written.
    const { rows } = await db.pool.query('SELECT (SELECT count(*) FROM provider_limits)::int AS limits, (SELECT count(*) FROM provider_slots)::int AS slots');
    expect(rows[0]).toEqual({ limits: 0, slots: 0 });
  });
});

describe('stats and /metrics', () => {
  it('show each kind\'s limits, slots in use, pause and parked bundles', async () => {
    const db = await createTestDb();
    await publishLimits(db.pool, { flights: { maxInFlight: 10, ratePerSecond: 50 }, tickets: { maxInFlight: 20 } }, 'test');
    await db.pool.query(`UPDATE provider_slots SET holder = 'w', expires_at = now() + interval '1 minute' WHERE kind = 'flights' AND slot < 2`);
    await pauseKind(db.pool, 'flights', 30_000, 'flights said 429, Retry-After 30 s', 'test');
    const [b] = await enqueueVip(db.pool, 2);
    await db.pool.query(
      `UPDATE bundles SET next_run_at = now() + interval '30 seconds', parked_until = now() + interval '30 seconds', parked_since = now(), parked_provider = 'flights', parked_reason = 'x' WHERE id = $1`,
      [b!.vip_bundle_id],
    );

    const json = await cli(db.url, ['stats', '--json']);
    expect(json.code).toBe(0);
    const providers = JSON.parse(json.stdout).providers;
    expect(providers.find((p: { kind: string }) => p.kind === 'flights')).toMatchObject({ max_in_flight: 10, rate_per_second: 50, in_flight: 2, pause_reason: 'flights said 429, Retry-After 30 s', parked_bundles: 1 });
    expect(providers.find((p: { kind: string }) => p.kind === 'taxis')).toMatchObject({ max_in_flight: null, rate_per_second: null, paused_until: null, parked_bundles: 0 });
    const text = await cli(db.url, ['stats']);
    expect(text.stdout).toMatch(/provider flights +in flight 2\/10, rate 50\/s, parked bundles 1, paused until \S+ \(flights said 429, Retry-After 30 s\)/);
    expect(text.stdout).toMatch(/provider taxis +in flight unlimited, rate unlimited, parked bundles 0\n/);

    const metrics = createMetrics({ defaultMetrics: false, logger: quietLogger() });
    metrics.collectFromDb(db.pool);
    const out = await metrics.registry.metrics();
    expect(out).toContain('bundlefleet_provider_max_in_flight{provider="flights"} 10');
    expect(out).toContain('bundlefleet_provider_rate_limit_per_second{provider="flights"} 50');
    expect(out).toContain('bundlefleet_provider_in_flight{provider="flights"} 2');
    expect(out).toContain('bundlefleet_provider_paused{provider="flights"} 1');
    expect(out).toContain('bundlefleet_provider_paused{provider="taxis"} 0');
    expect(out).toContain('bundlefleet_parked_bundles{provider="flights"} 1');
    expect(out).not.toContain('bundlefleet_provider_max_in_flight{provider="taxis"}');
  });
});

describe('stuck alerts', () => {
  it('are not raised for a bundle only waiting for a provider window, until that wait passes stuck-after', async () => {
    const db = await createTestDb();
    const [parked, plain] = await enqueueVip(db.pool, 2);
    await db.pool.query(`UPDATE bundles SET created_at = now() - interval '1 hour'`);
    const park = (since: string) =>
      db.pool.query(
        `UPDATE bundles SET next_run_at = now() + interval '30 seconds', parked_until = now() + interval '30 seconds', parked_since = now() - $2::interval,
           parked_provider = 'flights', parked_reason = 'flights said 429, Retry-After 30 s' WHERE id = $1`,
        [parked!.vip_bundle_id, since],
      );
    await park('10 seconds');
    const opts = { stuckAfterSeconds: 60, logger: quietLogger() };
    await runOnce(db.pool, opts);
    const stuck = async () => (await db.pool.query(`SELECT bundle_id FROM alerts WHERE kind = 'stuck' ORDER BY bundle_id`)).rows.map((r) => r.bundle_id);
    expect(await stuck()).toEqual([plain!.vip_bundle_id]);
    await park('2 minutes');
    await runOnce(db.pool, opts);
    expect((await stuck()).sort()).toEqual([parked!.vip_bundle_id, plain!.vip_bundle_id].sort());
  });
});

describe('bundlefleet providers --rate-limit', () => {
  it('answers 429 with Retry-After past N requests per second per kind, and refuses a bad value with exit 2', async () => {
    const bad = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [BIN, 'providers', '--rate-limit', 'fast', '--port', '0'], { env: cliEnv('postgres://unused'), timeout: 20_000 }, (err, _o, stderr) =>
        resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stderr }));
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--rate-limit: must be requests per second per kind, like 20\/s \(got "fast"\)/);

    const child = spawn(process.execPath, [BIN, 'providers', '--rate-limit', '2/s', '--port', '0'], { env: cliEnv('postgres://unused'), stdio: ['ignore', 'pipe', 'pipe'] });
    onCleanup(async () => void child.kill('SIGKILL'));
    const url = await new Promise<string>((resolve) => {
      let err = '';
      child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!);
      });
    });
    const statuses: Array<[number, string | null]> = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${url}/taxis/bookings?idempotency_key=k${i}`);
      statuses.push([res.status, res.headers.get('retry-after')]);
    }
    expect(statuses).toEqual([[404, null], [404, null], [429, '1']]);
    // Another kind has its own window.
    expect((await fetch(`${url}/flights/bookings?idempotency_key=k`)).status).toBe(404);
  });
});
