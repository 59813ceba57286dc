/**
 * Providers stricter or more forgetful than the contract's minimum, as simulator modes for the
 * whole run: `forget-cancels` (no tombstones: a cancel of an unseen key is answered `not_found`
 * and forgotten, so a late booking with that key is made and stays live) and `concurrent-409`
 * (a booking whose key is already in flight is refused 409 "in progress", as Stripe does).
 */
import type { Fault, Preparation } from './fault.js';

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
  async prepare(): Promise<Preparation> {
    return { simulator: { concurrentConflict: true } };
  }
  report() {
    return { concurrent_conflict: true };
  }
}
