/**
 * Issue 13, part 2: a bundle finishes (or is undone) under the kind version it was enqueued with,
 * whatever the workers running it now consider the latest; a worker that does not carry a version
 * leaves its bundles alone and says so.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { enqueueVip, startSimulator, startWorker, superviseInBackground, vipPayload, waitFor } from './support/fleet.js';
import { spawnWorker } from './support/processes.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { fleetStats, unrunnableKindVersions, type KindVersionCount } from '../src/bundles/read.js';
import { UnknownKindVersion } from '../src/bundles/kinds.js';
import { cli, expectNoStack } from './support/cli.js';

async function stepNames(pool: pg.Pool, id: string): Promise<string[]> {
  return (await pool.query('SELECT name FROM steps WHERE bundle_id = $1 ORDER BY position', [id])).rows.map((r) => r.name);
}

describe('kind versions', () => {
  it('finishes v1 bundles under v1 after their worker process is SIGKILLed mid-way, while new bundles run v2', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 300 });
    const v1 = await enqueueVip(db.pool, 4, 1);
    const first = spawnWorker(db.url, sim.url, 'old-build');
    await waitFor('some v1 steps booked', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM steps WHERE status = 'booked'`);
      return rows[0]!.n >= 2;
    }, 20_000);
    first.child.kill('SIGKILL');
    await first.exited;
    sim.setFaults({ latencyMs: 0 });
    // Passes until PostgreSQL has dropped the killed worker's lock (under load that takes a moment).
    superviseInBackground(db.pool);

    startWorker(db.url, sim, { name: 'new-build' });
    await waitFor('the v1 bundles completed', async () => {
      const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundles WHERE kind_version = 1 AND state = 'completed'`);
      return rows[0]!.n === 4;
    }, 20_000);
    for (const b of v1) expect(await stepNames(db.pool, b.vip_bundle_id)).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
    const { rows: waited } = await db.pool.query(`SELECT count(*)::int AS n FROM bundle_history WHERE to_state = 'waiting'`);
    expect(waited[0].n).toBe(0);

    // A bundle enqueued now gets the latest version, with its wait for the ticketing confirmations.
    const [v2] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    await waitFor('the v2 bundle waiting', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [v2!.vip_bundle_id])).rows[0].state === 'waiting', 15_000);
    const { rows } = await db.pool.query('SELECT kind_version FROM bundles WHERE id = $1', [v2!.vip_bundle_id]);
    expect(rows[0].kind_version).toBe(2);
  });

  it('leaves bundles of a version it does not carry for a worker that does, and says so', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [old] = await enqueueVip(db.pool, 1, 1);
    const reported: KindVersionCount[][] = [];
    startWorker(db.url, sim, { name: 'v2-only', kinds: [{ kind: 'vip', version: 2 }], onUnrunnable: (c) => reported.push(c) });
    await waitFor('the worker to report it', async () => reported.length > 0, 10_000);
    expect(reported[0]).toEqual([{ kind: 'vip', version: 1, bundles: 1 }]);
    await new Promise((r) => setTimeout(r, 500));
    const { rows } = await db.pool.query('SELECT state, attempt FROM bundles WHERE id = $1', [old!.vip_bundle_id]);
    expect(rows[0]).toEqual({ state: 'pending', attempt: 0 });
    // What `stats` and the status page show, for a build that lacks v1.
    expect(await unrunnableKindVersions(db.pool, [{ kind: 'vip', version: 2 }, { kind: 'noop', version: 1 }])).toEqual([{ kind: 'vip', version: 1, bundles: 1 }]);
    // This build carries v1, so its own stats find nothing unrunnable.
    expect((await fleetStats(db.pool)).unrunnable_kind_versions).toEqual([]);
  });

  it('refuses to enqueue under a version this build does not carry, writing nothing', async () => {
    const db = await createTestDb();
    await expect(enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 9 })).rejects.toBeInstanceOf(UnknownKindVersion);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM bundles');
    expect(rows[0].n).toBe(0);
  });

  it('enqueue with an idempotency key used under another --kind-version says the version differs (exit 2, nothing written)', async () => {
    const db = await createTestDb();
    const p = vipPayload();
    const flags = ['enqueue', '--customer-email', p.customer_email, '--show-id', p.show_id, '--tickets', String(p.number_of_tickets), ...p.passengers.flatMap((n) => ['--passenger', n]),
      '--inbound-flight-id', p.inbound_flight_id, '--return-flight-id', p.return_flight_id, '--idempotency-key', 'k1'];
    expect((await cli(db.url, [...flags, '--kind-version', '2'])).code).toBe(0);
    const run = await cli(db.url, [...flags, '--kind-version', '1']);
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toBe('bundlefleet: bad input:\n  idempotency_key "k1" was already used with kind version 2 (this request: 1); use a new key for a new booking\n');
    const { rows } = await db.pool.query('SELECT kind_version FROM bundles');
    expect(rows).toEqual([{ kind_version: 2 }]);
  });
});

describe('BUNDLEFLEET_ALLOW_MISSING_KIND_VERSIONS through the real CLI', () => {
  const VAR = 'BUNDLEFLEET_ALLOW_MISSING_KIND_VERSIONS';
  /** A compensating bundle under a kind version this build does not carry. */
  async function unrunnable() {
    const db = await createTestDb();
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }]);
    await db.pool.query(`UPDATE bundles SET kind_version = 9, state = 'compensating', phase = 'undo' WHERE id = $1`, [b!.vip_bundle_id]);
    return db;
  }

  it('false, 0, no, off and empty leave the refusal on: migrate and worker still exit 2', async () => {
    const db = await unrunnable();
    for (const value of ['false', '0', 'no', 'off', '', 'FALSE', ' No ']) {
      const migrate = await cli(db.url, ['migrate'], { env: { [VAR]: value } });
      expect(migrate.code, `${VAR}=${JSON.stringify(value)}: ${migrate.stderr}`).toBe(2);
      expect(migrate.stderr).toMatch(/unfinished bundles \(or undone ones still due a reconciliation pass\) use kind versions this build does not carry \(1 vip v9\)/);
    }
    const worker = await cli(db.url, ['worker', '--providers-url', 'http://127.0.0.1:9'], { env: { [VAR]: 'false' }, timeoutMs: 20_000 });
    expect(worker.code, worker.stderr).toBe(2);
    expect(worker.stderr).toMatch(/1 vip v9/);
  });

  it('anything else is exit 2 naming the variable and the accepted values, and writes nothing', async () => {
    const db = await unrunnable();
    for (const args of [['migrate'], ['worker', '--providers-url', 'http://127.0.0.1:9']]) {
      const run = await cli(db.url, args, { env: { [VAR]: 'maybe' }, timeoutMs: 20_000 });
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toContain(`--allow-missing-kind-versions (${VAR}): must be true, 1, yes or on, or false, 0, no, off or empty (got "maybe")`);
      expectNoStack(run);
    }
    const { rows } = await db.pool.query(`SELECT state, kind_version, attempt, locked_by FROM bundles`);
    expect(rows).toEqual([{ state: 'compensating', kind_version: 9, attempt: 0, locked_by: null }]);
  });

  it('stats names the unrunnable kind versions in its text, as --json does, and labels the due age truthfully', async () => {
    const db = await unrunnable();
    const json = await cli(db.url, ['stats', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const s = JSON.parse(json.stdout);
    expect(s.unrunnable_kind_versions).toEqual([{ kind: 'vip', version: 9, bundles: 1 }]);
    expect(s.by_state).toMatchObject({ pending: 0, compensating: 1 });
    // The age covers due compensating bundles too (the claim takes both): no pending one here.
    expect(typeof s.oldest_due_pending_age_seconds).toBe('number');
    const text = await cli(db.url, ['stats']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('1 unfinished vip v9 bundle(s): this build does not carry that version; they wait for a worker that does\n');
    expect(text.stdout).toMatch(/^oldest due \(pending or compensating\): \d+\.\d s$/m);
  });

  it('true, 1, yes and on still override, and the flag wins over the variable', async () => {
    const db = await unrunnable();
    for (const value of ['true', '1', 'yes', 'on', 'TRUE']) {
      const migrate = await cli(db.url, ['migrate'], { env: { [VAR]: value } });
      expect(migrate.code, `${VAR}=${value}: ${migrate.stderr}`).toBe(0);
    }
    const flag = await cli(db.url, ['migrate', '--allow-missing-kind-versions'], { env: { [VAR]: 'false' } });
    expect(flag.code, flag.stderr).toBe(0);
  });
});
