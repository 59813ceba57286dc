/**
 * A paused process: SIGSTOP past the lease (a long GC, a frozen VM), then SIGCONT. The process
 * comes back believing no time has passed, with agents mid-call and leases long gone, and its
 * kernel answered TCP keep-alives all along, so PostgreSQL still sees its sessions (and their
 * locks) as alive.
 *
 * Every --pause-every-ms (±25 %) one running worker is stopped for --pause-ms (default the lease
 * plus 3 s), preferably one holding claimed bundles; the last running worker is never paused.
 * This mode runs two supervisors, with a supervisor lease as short as the workers' lease, and
 * every second pause stops a supervisor instead: the other must take over.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ChaosOptions, Kill } from '../options.js';
import type { FleetProcess } from '../fleet.js';
import { nextAt, pick, pickBusyWorker, until, type Fault, type FaultContext, type Preparation } from './fault.js';

export class PauseWorkers implements Fault {
  readonly name = 'pause-workers';
  /** Worker pauses, as (name, start) pairs for the recovery figures. */
  readonly workerPauses: Kill[] = [];
  private supervisorPauses = 0;
  private readonly pauseMs: number;

  constructor(private readonly opts: ChaosOptions) {
    this.pauseMs = opts.pauseMs ?? opts.leaseSeconds * 1000 + 3000;
  }

  async prepare(): Promise<Preparation> {
    // The supervisors' fleet-wide lease as short as the workers' lease: a paused holder loses it,
    // and the other supervisor must take over (and the resumed one notice it lost it).
    return { supervisors: 2, supervisorArgs: ['--supervisor-lease-seconds', String(this.opts.leaseSeconds)] };
  }

  async run(ctx: FaultContext): Promise<void> {
    const resumes: Promise<void>[] = [];
    let next = nextAt(ctx.chaosStart, this.opts.pauseEveryMs / 2, ctx.random);
    let count = 0;
    try {
      while (await until(next, ctx)) {
        if (Date.now() < next) continue;
        // A pause must outlast the lease, so one starting late would stretch the window by a whole pause.
        if (Date.now() + this.pauseMs > ctx.chaosEnd + 2000 && count > 0) break;
        const supervisors = ctx.fleet.running('supervisor');
        const victim = count % 2 === 1 && supervisors.length > 1
          ? pick(supervisors, ctx.random)
          : ctx.fleet.running('worker').length > 1 ? await pickBusyWorker(ctx) : undefined;
        if (!victim) {
          next = Date.now() + 250; // no worker holds claims yet: try again shortly
          continue;
        }
        count++;
        next = nextAt(next, this.opts.pauseEveryMs, ctx.random);
        resumes.push(this.pauseOne(victim, ctx));
      }
    } finally {
      // Never leave a process stopped, also when the run is interrupted.
      await Promise.allSettled(resumes);
    }
  }

  private async pauseOne(victim: FleetProcess, ctx: FaultContext): Promise<void> {
    ctx.fleet.pause(victim);
    if (victim.role === 'worker') this.workerPauses.push({ name: victim.name, at: Date.now() });
    else this.supervisorPauses++;
    ctx.say(`SIGSTOPped ${victim.name} for ${this.pauseMs} ms`);
    try {
      await delay(this.pauseMs, undefined, { signal: ctx.signal });
    } catch {
      // interrupted: continue it at once
    }
    ctx.fleet.resume(victim);
    ctx.say(`SIGCONTed ${victim.name}`);
  }

  report() {
    return { worker_pauses: this.workerPauses.length, supervisor_pauses: this.supervisorPauses, pause_ms: this.pauseMs, lease_seconds: this.opts.leaseSeconds };
  }
}
