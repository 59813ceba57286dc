/**
 * An operator cancelling bundles while their agents run: every --cancel-every-ms (±25 %) a random
 * running bundle still booking is cancelled (`bundlefleet cancel`'s code path), so its undo races
 * the old agent's provider calls, retries and local writes. With forget-cancels, a cancel that
 * reaches the provider before the old agent's booking leaves no tombstone behind it.
 */
import { Conflict } from '../../errors.js';
import { cancelBundle } from '../../supervisor/operator.js';
import type { ChaosOptions } from '../options.js';
import { nextAt, until, type Fault, type FaultContext } from './fault.js';

export class OperatorCancels implements Fault {
  readonly name = 'operator-cancels';
  private cancelled = 0;
  private refused = 0;
  private failed = 0;

  constructor(private readonly opts: ChaosOptions) {}

  async run(ctx: FaultContext): Promise<void> {
    let next = nextAt(ctx.chaosStart, this.opts.cancelEveryMs, ctx.random);
    while (await until(next, ctx)) {
      if (Date.now() < next) continue;
      next = nextAt(next, this.opts.cancelEveryMs, ctx.random);
      try {
        const { rows } = await ctx.pool.query<{ id: string }>(
          `SELECT id FROM bundles WHERE id = ANY($1::uuid[]) AND state = 'running' AND phase = 'book' ORDER BY random() LIMIT 1`,
          [[...ctx.ids]],
        );
        if (!rows[0]) continue;
        await cancelBundle(ctx.pool, rows[0].id, 'chaos operator');
        this.cancelled++;
      } catch (err) {
        // Refused (the bundle moved on between the pick and the cancel) or PostgreSQL restarting.
        if (err instanceof Conflict) this.refused++;
        else this.failed++;
      }
    }
  }

  report() {
    return { cancelled: this.cancelled, refused: this.refused, failed: this.failed, every_ms: this.opts.cancelEveryMs };
  }
}
