/**
 * The pg-boss queue `bundlefleet.signals`, for services that would rather send a confirmation as a
 * job than call the HTTP API: job data `{"vip_bundle_id": "...", "name": "inbound_ticketed",
 * "id"?: "...", "data"?: {...}}`. Workers consume it and deliver each job through receiveSignal, so
 * it is stored once per sender id like every other signal. A job that is bad input (unknown bundle,
 * a signal the bundle does not wait for) is logged and completed, never retried; any other error
 * fails the job and pg-boss retries it.
 */
import PgBoss from 'pg-boss';
import type pg from 'pg';
import { BadInput, NotFound } from '../errors.js';
import type { Logger } from '../logger.js';
import { SIGNAL_QUEUE } from './events.js';
import { receiveSignal } from './signals.js';

export interface SignalConsumer {
  stop(): Promise<void>;
}

interface SignalJob {
  vip_bundle_id?: unknown;
  name?: unknown;
  id?: unknown;
  data?: unknown;
}

export async function startSignalConsumer(url: string, pool: pg.Pool, logger: Logger): Promise<SignalConsumer> {
  const log = logger.child({ role: 'signals' });
  const boss = new PgBoss({ connectionString: url, max: 2, migrate: false, supervise: false, schedule: false });
  boss.on('error', (err) => log.warn({ err: err.message }, 'pg-boss error'));
  await boss.start();
  await boss.work<SignalJob>(SIGNAL_QUEUE, { pollingIntervalSeconds: 1, batchSize: 50 } as never, async (jobs) => {
    for (const job of jobs) {
      const d = job.data ?? {};
      try {
        const r = await receiveSignal(pool, {
          bundleId: String(d.vip_bundle_id ?? ''),
          name: String(d.name ?? ''),
          id: typeof d.id === 'string' ? d.id : undefined,
          data: d.data && typeof d.data === 'object' ? (d.data as Record<string, unknown>) : undefined,
          actor: 'queue',
        });
        log.info({ bundleId: r.vip_bundle_id, signal: r.name, stored: r.stored, woke: r.woke }, 'signal from the queue');
      } catch (err) {
        if (!(err instanceof BadInput || err instanceof NotFound)) throw err;
        log.warn({ jobId: job.id, err: err.message }, 'signal job refused; not retried');
      }
    }
  });
  return {
    async stop() {
      await boss.stop({ graceful: true, wait: true, timeout: 10_000 });
    },
  };
}
