/**
 * The shape every fault of a chaos run has. The runner prepares every fault before the fleet
 * starts (a fault may put a proxy in front of the database, a webhook in front of the supervisor,
 * or a mode into the provider simulator), runs them side by side over the chaos window, then
 * closes them and puts each one's report in the summary.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import type { SimulatorOptions } from '../../providers/simulator.js';
import type { Fleet, FleetProcess } from '../fleet.js';
import type { ChaosOptions } from '../options.js';

export interface PrepareContext {
  opts: ChaosOptions;
  /** The database, direct (the runner's own connections never go through a fault). */
  databaseUrl: string;
  say: (msg: string) => void;
}

/** What a fault changes in the fleet before it starts; the runner merges these. */
export interface Preparation {
  simulator?: Partial<SimulatorOptions>;
  /** The workers' DATABASE_URL (e.g. through the half-open proxy). */
  workerDatabaseUrl?: string;
  supervisorEnv?: NodeJS.ProcessEnv;
  supervisorArgs?: string[];
  /** How many `supervise --loop` processes to run (the largest asked for wins). */
  supervisors?: number;
}

export interface FaultContext {
  opts: ChaosOptions;
  fleet: Fleet;
  /** The runner's own pool, direct. */
  pool: pg.Pool;
  databaseUrl: string;
  /** The embedded server's home, when the run has its own server. */
  home?: string;
  random: () => number;
  say: (msg: string) => void;
  signal?: AbortSignal;
  /** Bundles enqueued so far (grows during the window). */
  ids: readonly string[];
  t0: number;
  chaosStart: number;
  /** No new fault starts after this; one under way finishes (a pause is always continued). */
  chaosEnd: number;
}

export interface Fault {
  name: string;
  prepare?(ctx: PrepareContext): Promise<Preparation>;
  run?(ctx: FaultContext): Promise<void>;
  /** Figures for the summary's `faults` section. */
  report(): Record<string, unknown>;
  close?(): Promise<void>;
}

/** Sleeps until `at` (or the abort); false once the chaos window is over. */
export async function until(at: number, ctx: Pick<FaultContext, 'chaosEnd' | 'signal'>): Promise<boolean> {
  const wait = Math.min(at, ctx.chaosEnd) - Date.now();
  if (wait > 0) await delay(wait, undefined, { signal: ctx.signal });
  return Date.now() < ctx.chaosEnd;
}

/** The next time of a recurring fault: `every` ± `jitter`/2 of it. */
export const nextAt = (from: number, every: number, random: () => number, jitter = 0.5) => from + every * (1 - jitter / 2 + random() * jitter);

export const pick = <T>(items: readonly T[], random: () => number): T | undefined => (items.length ? items[Math.floor(random() * items.length)] : undefined);

/**
 * A running worker that holds claimed bundles (so a fault on it bites), picked at random. With
 * `orAny`, any worker `orAny` accepts when none is busy (or the database cannot say). A worker
 * still starting up is never a good victim: one that meets the PostgreSQL restart mid-start-up
 * rightly refuses to start, which is the harness's doing, not a crash of the fleet.
 */
export async function pickBusyWorker(ctx: FaultContext, orAny?: (p: FleetProcess) => boolean): Promise<FleetProcess | undefined> {
  const workers = ctx.fleet.running('worker');
  try {
    const { rows } = await ctx.pool.query<{ locked_by: string }>(`SELECT DISTINCT locked_by FROM bundles WHERE state = 'running' AND locked_by IS NOT NULL`);
    const busy = workers.filter((w) => rows.some((r) => r.locked_by.startsWith(`${w.name}.`)) && (orAny?.(w) ?? true));
    if (busy.length) return pick(busy, ctx.random);
  } catch {
    // fall through
  }
  return orAny ? pick(workers.filter(orAny), ctx.random) : undefined;
}
