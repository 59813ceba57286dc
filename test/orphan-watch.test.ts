/**
 * The orphan watch of `supervise --loop` (issue 12, scenario 4): between full passes it looks for
 * running bundles whose worker's liveness lock is gone and resets them at once, so a SIGKILLed
 * worker's bundles do not wait for the next pass. Here passes are a minute apart: only the watch
 * can reset the orphans within the test's bound. With the watch off, nothing is reset in that
 * time, which shows the bound is the watch's doing and not a pass's.
 */
import { spawn } from 'node:child_process';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { BIN, cliEnv } from './support/processes.js';
import { claimAs, enqueueVip, waitFor, workerGone } from './support/fleet.js';
import { superviseLoop as superviseLoopInProcess } from '../src/cli/supervise-command.js';
import { createLogger } from '../src/logger.js';
import { createPool } from '../src/db/pool.js';

function superviseLoop(url: string, extra: string[]): void {
  const child = spawn(process.execPath, [BIN, 'supervise', '--loop', '--interval-seconds', '60', ...extra], { env: cliEnv(url), stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  });
}

/** The loop's first pass has run and given its lease up. */
async function firstPassDone(pool: pg.Pool): Promise<void> {
  await waitFor('the first supervisor pass', async () => {
    const { rows } = await pool.query(`SELECT 1 FROM leases WHERE name = 'supervisor' AND expires_at <= now()`);
    return rows.length === 1;
  });
}

async function orphans(pool: pg.Pool, workerId: string): Promise<string[]> {
  const bundles = await enqueueVip(pool, 3);
  const claimed = await claimAs(pool, { workerId, limit: 3, leaseSeconds: 600 });
  expect(claimed).toHaveLength(3);
  await workerGone(workerId);
  return bundles.map((b) => b.vip_bundle_id);
}

const states = async (pool: pg.Pool, ids: string[]) =>
  (await pool.query<{ state: string }>(`SELECT state FROM bundles WHERE id = ANY($1::uuid[])`, [ids])).rows.map((r) => r.state);

describe('supervise --loop watches for orphans between passes', () => {
  it('resets a gone worker’s bundles long before the next pass, recording why', async () => {
    const db = await createTestDb();
    superviseLoop(db.url, ['--orphan-check-ms', '100']);
    await firstPassDone(db.pool);
    const ids = await orphans(db.pool, 'gone-worker');

    await waitFor('the orphans reset', async () => (await states(db.pool, ids)).every((s) => s === 'pending'), 10_000);
    const { rows } = await db.pool.query(
      `SELECT bundle_id, reason FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND from_state = 'running' AND to_state = 'pending'`,
      [ids],
    );
    expect(rows.map((r) => r.reason)).toEqual(ids.map(() => 'owner gone: reset → pending'));
    const { rows: counts } = await db.pool.query(`SELECT failure_count, reset_count, locked_by FROM bundles WHERE id = ANY($1::uuid[])`, [ids]);
    expect(counts.every((c) => c.failure_count === 1 && c.reset_count === 1 && c.locked_by === null)).toBe(true);
  });

  it('with --orphan-check-ms 0 only a pass resets them', async () => {
    const db = await createTestDb();
    superviseLoop(db.url, ['--orphan-check-ms', '0']);
    await firstPassDone(db.pool);
    const ids = await orphans(db.pool, 'gone-worker-2');
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await states(db.pool, ids)).toEqual(['running', 'running', 'running']);
  });

  it('refuses a bad --orphan-check-ms with exit 2 naming it', async () => {
    const db = await createTestDb();
    const child = spawn(process.execPath, [BIN, 'supervise', '--loop', '--orphan-check-ms', 'soon'], { env: cliEnv(db.url), stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(2);
    expect(err).toContain('--orphan-check-ms');
  });
});

describe('the loop while the database is away', () => {
  it('logs the first failure of each failing check, not one line per try', async () => {
    const lines: Array<{ level: string; msg: string; failures?: number }> = [];
    const logger = createLogger({ destination: { write: (s: string) => void lines.push(JSON.parse(s)) }, level: 'info' });
    // Nothing listens on port 9: every pass and every orphan check fails at once.
    const pool = createPool('postgres://postgres:x@127.0.0.1:9/none', { max: 2 });
    onCleanup(() => pool.end());
    const loop = superviseLoopInProcess(pool, { logger }, 50, 20);
    await new Promise((r) => setTimeout(r, 1_500));
    await loop.stop();
    const failures = lines.filter((l) => l.level === 'error');
    expect(failures.map((l) => l.msg).sort()).toEqual(['orphan check failed; retrying next interval', 'supervisor pass failed; retrying next interval']);
    expect(failures.every((l) => l.failures === 1)).toBe(true);
  });
});
