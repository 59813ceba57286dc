/**
 * One immediate (crash-like) restart of the run's own PostgreSQL at --restart-at of the window.
 * No worker may be starting up while the server is away: one would rightly refuse to start. So
 * new workers wait, and the restart waits (at most 20 s) until every running worker is up.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { restartEmbeddedPostgres } from '../../db/embedded.js';
import type { ChaosOptions, ChaosSummary } from '../options.js';
import type { Fault, FaultContext } from './fault.js';

/** Server settings of the dedicated server: no fsync (an immediate stop is not an OS crash, so nothing is lost). */
export const SERVER_SETTINGS = { fsync: 'off', full_page_writes: 'off' };

/**
 * Whether every running worker has finished starting up: a worker takes its liveness session
 * (application_name `bundlefleet worker <name>.<gen>.<rand>`) at its first claim, after its
 * start-up checks. On a loaded machine start-up takes longer than any fixed wait.
 */
async function everyWorkerStarted(ctx: FaultContext): Promise<boolean> {
  const { rows } = await ctx.pool.query<{ name: string }>(`SELECT application_name AS name FROM pg_stat_activity WHERE application_name LIKE 'bundlefleet worker %'`);
  return ctx.fleet.running('worker').every((w) => rows.some((r) => r.name.startsWith(`bundlefleet worker ${w.name}.`)));
}

export class PgRestart implements Fault {
  readonly name = 'pg-restart';
  info: ChaosSummary['pg_restart'] = null;
  /** [start, end] of the downtime, to keep it out of the kill recovery figures. */
  window: [number, number] | undefined;

  constructor(private readonly opts: ChaosOptions) {}

  async run(ctx: FaultContext): Promise<void> {
    if (!ctx.home) {
      this.info = { skipped: 'external database (--database-url / DATABASE_URL)' };
      return;
    }
    await delay((ctx.chaosEnd - ctx.chaosStart) * this.opts.restartAt, undefined, { signal: ctx.signal });
    ctx.fleet.holdSpawns();
    try {
      const waitUntil = Date.now() + 20_000;
      while (Date.now() < waitUntil && (Date.now() - ctx.fleet.lastSpawnAt < 3000 || !(await everyWorkerStarted(ctx)))) await delay(100, undefined, { signal: ctx.signal });
      const started = Date.now();
      ctx.say('restarting PostgreSQL (immediate)');
      await restartEmbeddedPostgres(ctx.home, 'immediate', SERVER_SETTINGS);
      this.window = [started, Date.now()];
      this.info = { at_s: (started - ctx.t0) / 1000, downtime_ms: Date.now() - started };
      ctx.say(`PostgreSQL back after ${Date.now() - started} ms`);
    } finally {
      ctx.fleet.releaseSpawns();
    }
  }

  report() {
    return { ...(this.info ?? { skipped: 'not reached' }) };
  }
}
