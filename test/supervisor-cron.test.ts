/** Supervisor passes on a pg-boss schedule inside workers (worker --supervise-cron). */
import PgBoss from 'pg-boss';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, quietLogger, waitFor, claimAs, workerGone } from './support/fleet.js';
import { BadInput } from '../src/errors.js';
import { startSupervisorSchedule, SUPERVISE_QUEUE } from '../src/supervisor/cron.js';

describe('supervisor on a pg-boss schedule', () => {
  it('registers the cron schedule and runs a supervisor pass for each scheduled job', async () => {
    const db = await createTestDb();
    const schedule = await startSupervisorSchedule(db.url, db.pool, '*/5 * * * *', { logger: quietLogger(), backoffBaseSeconds: 0.01 });
    onCleanup(() => schedule.stop());
    const boss = new PgBoss({ connectionString: db.url, max: 1, supervise: false, schedule: false, migrate: false });
    await boss.start();
    onCleanup(() => boss.stop({ graceful: false }));
    expect((await boss.getSchedules()).map((s) => [s.name, s.cron])).toEqual([[SUPERVISE_QUEUE, '*/5 * * * *']]);

    // An orphaned bundle (its worker never held a liveness lock) waits for a supervisor pass.
    await enqueueVip(db.pool, 1);
    const [claimed] = await claimAs(db.pool, { workerId: 'gone', limit: 1, leaseSeconds: 60 });
    await workerGone('gone');
    // What pg-boss's timekeeper sends at a cron tick: one job on the queue.
    await boss.send(SUPERVISE_QUEUE, {});
    await waitFor('the scheduled pass to reset the orphan', async () => {
      const { rows } = await db.pool.query('SELECT state FROM bundles WHERE id = $1', [claimed!.id]);
      return rows[0].state === 'pending';
    }, 20_000);
  });

  it('refuses an unparsable cron expression as bad input naming the flag', async () => {
    const db = await createTestDb();
    const attempt = startSupervisorSchedule(db.url, db.pool, 'bogus cron', { logger: quietLogger() });
    await expect(attempt).rejects.toBeInstanceOf(BadInput);
    await expect(attempt).rejects.toThrow(/--supervise-cron/);
  });
});
