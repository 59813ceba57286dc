/**
 * SIGKILL a random running worker every --kill-every-ms (±25 %), or --kills N spread evenly over
 * the window, and start a replacement at once. The kills are kept for the recovery figures.
 */
import type { ChaosOptions, Kill } from '../options.js';
import { nextAt, pick, until, type Fault, type FaultContext } from './fault.js';

export class KillWorkers implements Fault {
  readonly name = 'kill-workers';
  readonly kills: Kill[] = [];
  private every = Infinity;

  constructor(private readonly opts: ChaosOptions) {
    const chaosMs = opts.seconds * 1000;
    this.every = opts.kills !== undefined ? (opts.kills > 0 ? chaosMs / (opts.kills + 1) : Infinity) : opts.killEveryMs;
  }

  async run(ctx: FaultContext): Promise<void> {
    const limit = this.opts.kills ?? Infinity;
    const jitter = this.opts.kills === undefined ? 0.5 : 0;
    let next = ctx.chaosStart + Math.min(this.every, ctx.chaosEnd - ctx.chaosStart);
    while (this.kills.length < limit && (await until(next, ctx))) {
      if (Date.now() < next) continue;
      next = nextAt(next, this.every, ctx.random, jitter);
      const victim = pick(ctx.fleet.running('worker'), ctx.random);
      if (!victim) continue;
      const at = Date.now();
      await ctx.fleet.kill(victim);
      this.kills.push({ name: victim.name, at });
      ctx.fleet.startWorker();
      ctx.say(`SIGKILLed ${victim.name}`);
    }
  }

  report() {
    return { kills: this.kills.length, every_ms: Number.isFinite(this.every) ? Math.round(this.every) : null };
  }
}
