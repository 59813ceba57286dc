/**
 * Supervisor passes on a pg-boss cron schedule inside workers, so a fleet needs no system cron.
 * pg-boss turns each cron tick into one job fleet-wide (its own singleton per tick); whichever
 * worker fetches it runs the pass, and the supervisor's advisory lock still guards the pass.
 */
import PgBoss from 'pg-boss';
import type pg from 'pg';
import type { Logger } from '../logger.js';
import { BadInput } from '../errors.js';
import { runOnce, type SupervisorOptions } from './supervisor.js';

export const SUPERVISE_QUEUE = 'bundlefleet-supervise';

export interface SupervisorSchedule {
  stop(): Promise<void>;
}

export async function startSupervisorSchedule(url: string, pool: pg.Pool, cron: string, opts: SupervisorOptions & { logger: Logger }): Promise<SupervisorSchedule> {
  const log = opts.logger.child({ role: 'supervisor', cron });
  const boss = new PgBoss({ connectionString: url, max: 2, migrate: false, supervise: true, schedule: true });
  boss.on('error', (err) => log.warn({ err: err.message }, 'pg-boss error'));
  await boss.start();
  if (!(await boss.getQueue(SUPERVISE_QUEUE))) {
    await boss.createQueue(SUPERVISE_QUEUE, { name: SUPERVISE_QUEUE, policy: 'singleton' } as never).catch(async (err) => {
      if (!(await boss.getQueue(SUPERVISE_QUEUE))) throw err;
    });
  }
  try {
    await boss.schedule(SUPERVISE_QUEUE, cron, {}, { tz: 'UTC', retryLimit: 0, expireInSeconds: 600 } as never);
  } catch (err) {
    // pg-boss parses the cron expression here; an unparsable one is the caller's bad input.
    await boss.stop({ graceful: false });
    throw new BadInput(`--supervise-cron (BUNDLEFLEET_SUPERVISE_CRON): not a cron expression (${(err as Error).message})`, undefined, { cause: err });
  }
  await boss.work(SUPERVISE_QUEUE, { pollingIntervalSeconds: 2 } as never, async () => {
    const report = await runOnce(pool, opts);
    log.debug({ report }, 'scheduled supervisor pass done');
  });
  log.info('supervisor scheduled with pg-boss');
  return {
    async stop() {
      await boss.stop({ graceful: true, wait: true, timeout: 10_000 });
    },
  };
}
