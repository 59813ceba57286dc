/**
 * Providers stricter or more forgetful than the contract's minimum, as simulator modes for the
 * whole run: `forget-cancels` (no tombstones: a cancel of an unseen key is answered `not_found`
 * and forgotten, so a late booking with that key is made and stays live) and `concurrent-409`
 * (a booking whose key is already in flight is refused 409 "in progress", as Stripe does).
 * For a request to be in flight when its own retry comes, some bookings must outlast the
 * client's timeout: with concurrent-409, 2 % of bookings are slow (answered after --hang-ms)
 * unless --slow-rate says otherwise, and a booking is made only as it is answered
 * (`bookOnAnswer`), so while a slow one is in flight a lookup of its key finds nothing and the
 * retry's 409 looks like a definitive no (agents/agent.ts bookStep).
 */
import type { ChaosOptions } from '../options.js';
import type { Fault, Preparation } from './fault.js';

export const SLOW_RATE_WITH_CONFLICTS = 0.02;

export class ForgetCancels implements Fault {
  readonly name = 'forget-cancels';
  async prepare(): Promise<Preparation> {
    return { simulator: { forgetUnknownCancels: true } };
  }
  report() {
    return { forget_unknown_cancels: true };
  }
}

export class ConcurrentConflict implements Fault {
  readonly name = 'concurrent-409';
  private readonly slowRate: number;
  constructor(opts: ChaosOptions) {
    this.slowRate = opts.slowRate ?? SLOW_RATE_WITH_CONFLICTS;
  }
  async prepare(): Promise<Preparation> {
    return { simulator: { concurrentConflict: true, slowRate: this.slowRate, bookOnAnswer: true } };
  }
  report() {
    return { concurrent_conflict: true, slow_rate: this.slowRate, book_on_answer: true };
  }
}
