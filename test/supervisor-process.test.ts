/**
 * The supervisor against real processes and a real server restart:
 *  (a) a worker PROCESS SIGKILLed mid-step: its liveness lock vanishes with its connection, so the
 *      next supervisor pass resets its bundles at once (not after the 60 s lease) and another
 *      worker completes them, each step booked once (invariants 1 and 2);
 *  (b) PostgreSQL restarted (immediate) mid-run on a dedicated server: workers and supervisor
 *      passes reconnect on their own and every bundle completes (invariant 2);
 *  (c) the CLI's exit codes for supervise --fail-on-alert, alerts ack, retry and cancel.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { BIN, cli, cliEnv, spawnWorker } from './support/processes.js';
import { enqueueVip, quietLogger, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { runOnce, type PassReport } from '../src/supervisor/supervisor.js';
import { ensureEmbeddedPostgres, restartEmbeddedPostgres, stopEmbeddedPostgres } from '../src/db/embedded.js';
import { createPool } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import type { LedgerEntry } from '../src/providers/simulator.js';

const STEPS = ['show_tickets', 'inbound_flight', 'return_flight', 'taxi'];

/** Invariant 1 from the ledger: one reference per (bundle, step), and each completed bundle holds exactly its four keys booked. */
function expectBookedOnce(ledger: LedgerEntry[], completedIds: string[]): void {
  const withReference = ledger.filter((e) => e.reference);
  expect(new Set(withReference.map((e) => e.idempotency_key)).size).toBe(withReference.length);
  for (const id of completedIds) {
    const mine = ledger.filter((e) => e.idempotency_key.startsWith(`${id}:`));
    expect(mine.map((e) => e.idempotency_key).sort()).toEqual(STEPS.map((s) => `${id}:${s}`).sort());
    expect(mine.every((e) => e.status === 'booked')).toBe(true);
  }
}

async function stepReferencesMatchLedger(pool: pg.Pool, ledger: LedgerEntry[], ids: string[]): Promise<void> {
  const { rows } = await pool.query<{ idempotency_key: string; reference: string }>(
    `SELECT idempotency_key, reference FROM steps WHERE bundle_id = ANY($1::uuid[]) AND status = 'booked'`,
    [ids],
  );
  expect(rows).toHaveLength(ids.length * 4);
  const held = new Map(ledger.map((e) => [e.idempotency_key, e.reference]));
  for (const r of rows) expect(held.get(r.idempotency_key), r.idempotency_key).toBe(r.reference);
}

describe('supervisor with real processes', () => {
  it('(a) resets a SIGKILLed worker process’s bundles on the next pass, and another worker completes them, each step booked once', async () => {
    const db = await createTestDb();
    // Slow providers, so that the kill lands in the middle of a provider call.
    const sim = await startSimulator({ latencyMs: 1500 });
    const victim = spawnWorker(db.url, sim.url, 'victim');
    const bundles = await enqueueVip(db.pool, 4);
    const ids = bundles.map((b) => b.vip_bundle_id);

    // Every bundle claimed by the victim and inside a provider call (intent recorded, no reply yet).
    const midCall = async () => {
      const { rows } = await db.pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM bundles b WHERE b.state = 'running' AND b.locked_by LIKE 'victim.%'
           AND EXISTS (SELECT 1 FROM steps s WHERE s.bundle_id = b.id AND s.status = 'booking')`,
      );
      return Number(rows[0]!.n) === ids.length;
    };
    await waitFor(`the victim worker to be mid-call on every bundle (output: ${victim.output()})`, midCall, 20_000);
    const { rows: before } = await db.pool.query<{ id: string; attempt: number; locked_until: Date }>(
      'SELECT id, attempt, locked_until FROM bundles WHERE id = ANY($1::uuid[])',
      [ids],
    );

    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    await victim.exited;
    // Another worker is there to take them (and wakes on the supervisor's NOTIFY).
    startWorker(db.url, sim, { name: 'rescuer', concurrency: 10, providerTimeoutMs: 5000 });

    // Supervisor passes until the orphans are reset: PostgreSQL notices the dead connection within moments.
    const reports: PassReport[] = [];
    await waitFor('a supervisor pass to reset the orphans', async () => {
      reports.push(await runOnce(db.pool, { logger: quietLogger(), backoffBaseSeconds: 0.1 }));
      return reports.reduce((n, r) => n + r.orphans, 0) === ids.length;
    }, 5_000);
    const resetAt = Date.now();
    expect(resetAt - killedAt).toBeLessThan(3_000);
    expect(reports.reduce((n, r) => n + r.expired, 0)).toBe(0);
    // Reset long before the lease would have run out.
    for (const b of before) expect(b.locked_until.getTime()).toBeGreaterThan(resetAt + 50_000);
    const { rows: resets } = await db.pool.query<{ reason: string; actor: string }>(
      `SELECT reason, actor FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND from_state = 'running' AND to_state = 'pending'`,
      [ids],
    );
    expect(resets).toHaveLength(ids.length);
    expect(resets.every((r) => r.reason.startsWith('owner gone: reset'))).toBe(true);

    await waitFor('the rescuer to complete every bundle', async () => {
      const { rows } = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE id = ANY($1::uuid[]) AND state = 'completed'`, [ids]);
      return Number(rows[0]!.n) === ids.length;
    }, 40_000);

    // Re-claimed by the rescuer, as the next attempt, within a few seconds of the kill.
    const { rows: reclaims } = await db.pool.query<{ bundle_id: string; attempt: number; at: Date; actor: string }>(
      `SELECT DISTINCT ON (bundle_id) bundle_id, attempt, at, actor FROM bundle_history
       WHERE bundle_id = ANY($1::uuid[]) AND to_state = 'running' AND reason = 'claimed' AND at > $2
       ORDER BY bundle_id, id`,
      [ids, new Date(killedAt)],
    );
    expect(reclaims).toHaveLength(ids.length);
    for (const r of reclaims) {
      expect(r.actor).toMatch(/^rescuer\./);
      expect(r.attempt).toBe(before.find((b) => b.id === r.bundle_id)!.attempt + 1);
      expect(r.at.getTime() - killedAt).toBeLessThan(3_000);
    }

    // Each step booked once: the calls in flight at the kill were resolved by asking the provider
    // for their keys, so none was even requested twice.
    const ledger = sim.ledger();
    expectBookedOnce(ledger, ids);
    await stepReferencesMatchLedger(db.pool, ledger, ids);
    expect(ledger.every((e) => e.book_calls === 1)).toBe(true);
  }, 90_000);

  it('(b) survives an immediate PostgreSQL restart mid-run: workers and supervisor passes reconnect and every bundle completes', async () => {
    const home = await mkdtemp(join(tmpdir(), 'bundlefleet-restart-'));
    await chmod(home, 0o755); // the server runs as the postgres user
    const settings = { fsync: 'off' };
    onCleanup(async () => {
      await stopEmbeddedPostgres(home, 'immediate').catch(() => {});
      await rm(home, { recursive: true, force: true });
    });
    const url = await ensureEmbeddedPostgres({ home, settings });
    const pool = createPool(url, { max: 4 });
    onCleanup(() => pool.end());
    await migrate(pool, url);

    const sim = await startSimulator({ latencyMs: 150 });
    const bundles = await enqueueVip(pool, 40);
    const ids = bundles.map((b) => b.vip_bundle_id);
    const w1 = startWorker(url, sim, { name: 'wa', concurrency: 5, providerTimeoutMs: 2000 });
    const w2 = startWorker(url, sim, { name: 'wb', concurrency: 5, providerTimeoutMs: 2000 });

    // Supervisor passes back to back, so that the restart lands inside one (its lock connection
    // checked out of the pool); a failed pass (server away) is just retried.
    let stopped = false;
    const passErrors: string[] = [];
    const passes = (async () => {
      while (!stopped) {
        await runOnce(pool, { logger: quietLogger(), backoffBaseSeconds: 0.1 }).catch((err: Error) => passErrors.push(err.message));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    onCleanup(async () => {
      stopped = true;
      await passes;
    });

    // Mid-run: some bundles done, some in flight.
    await waitFor('some bundles completed and others running', async () => {
      const { rows } = await pool.query<{ done: string; running: string }>(
        `SELECT count(*) FILTER (WHERE state = 'completed') AS done, count(*) FILTER (WHERE state = 'running') AS running FROM bundles`,
      );
      return Number(rows[0]!.done) >= 3 && Number(rows[0]!.running) >= 3;
    }, 30_000);
    const idsBefore = [w1.workerId, w2.workerId];
    await restartEmbeddedPostgres(home, 'immediate', settings);

    await waitFor('every bundle completed after the restart', async () => {
      try {
        const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE state <> 'completed'`);
        return Number(rows[0]!.n) === 0;
      } catch {
        return false; // the server is still coming back
      }
    }, 90_000);
    stopped = true;
    await passes;

    // The workers took new ids (and liveness locks) after losing their connections, and claimed under them.
    expect([w1.workerId, w2.workerId]).not.toEqual(idsBefore);
    const { rows: claimers } = await pool.query<{ actor: string }>(`SELECT DISTINCT actor FROM bundle_history WHERE reason = 'claimed'`);
    expect(claimers.some((c) => /^w[ab]\./.test(c.actor) && !idsBefore.includes(c.actor))).toBe(true);
    // Bundles in flight at the restart were reset by the supervisor because their owners' locks went with the server.
    const { rows: resets } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundle_history WHERE reason LIKE 'owner gone%'`);
    expect(Number(resets[0]!.n)).toBeGreaterThan(0);

    const ledger = sim.ledger();
    expectBookedOnce(ledger, ids);
    await stepReferencesMatchLedger(pool, ledger, ids);
    expect(ledger).toHaveLength(ids.length * 4);
  }, 150_000);

  it('(c) CLI: supervise --fail-on-alert, alerts ack, retry/cancel of unknown or malformed ids, bad flags', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    // A bundle whose undo ran out: the supervisor raises a dead alert for it.
    await db.pool.query(
      `UPDATE bundles SET state = 'dead', phase = 'undo', undo_failure_count = 10, finished_at = now(), last_error = 'cancel kept failing' WHERE id = $1`,
      [b!.vip_bundle_id],
    );

    const failing = await cli(db.url, ['supervise', '--fail-on-alert']);
    expect(failing.code, failing.stderr).toBe(3);
    expect(failing.stderr).toMatch(/1 open alert/);
    const listed = await cli(db.url, ['alerts', '--json']);
    expect(listed.code).toBe(0);
    const alerts = JSON.parse(listed.stdout) as Array<{ id: string; kind: string; bundle_id: string }>;
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ kind: 'dead', bundle_id: b!.vip_bundle_id });

    const acked = await cli(db.url, ['alerts', 'ack', alerts[0]!.id]);
    expect(acked.code, acked.stderr).toBe(0);
    const passing = await cli(db.url, ['supervise', '--fail-on-alert']);
    expect(passing.code, passing.stderr).toBe(0);

    const unknown = randomUUID();
    const [retryUnknown, cancelUnknown, retryBad, cancelBad, ackBad, zeroAttempts] = await Promise.all([
      cli(db.url, ['retry', unknown]),
      cli(db.url, ['cancel', unknown]),
      cli(db.url, ['retry', 'not-a-uuid']),
      cli(db.url, ['cancel', '12345']),
      cli(db.url, ['alerts', 'ack', 'abc']),
      cli(db.url, ['supervise', '--max-attempts', '0']),
    ]);
    expect(retryUnknown.code).toBe(1);
    expect(retryUnknown.stderr).toMatch(new RegExp(`no bundle .*${unknown}`));
    expect(cancelUnknown.code).toBe(1);
    expect(cancelUnknown.stderr).toMatch(new RegExp(`no bundle .*${unknown}`));
    expect(retryBad.code).toBe(2);
    expect(retryBad.stderr).toMatch(/must be a UUID/);
    expect(cancelBad.code).toBe(2);
    expect(cancelBad.stderr).toMatch(/must be a UUID/);
    expect(ackBad.code).toBe(2);
    expect(ackBad.stderr).toMatch(/alert_id: must be a positive whole number/);
    expect(zeroAttempts.code).toBe(2);
    expect(zeroAttempts.stderr).toMatch(/--max-attempts/);

    // Bad input wrote nothing: the dead bundle is untouched and no new alert appeared.
    const { rows } = await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [b!.vip_bundle_id]);
    expect(rows[0]).toMatchObject({ state: 'dead' });
    const { rows: all } = await db.pool.query(`SELECT count(*)::int AS n FROM alerts`);
    expect(all[0]).toMatchObject({ n: 1 });
  }, 90_000);
});
