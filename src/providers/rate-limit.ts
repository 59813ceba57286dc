/**
 * The simulator's rate limit (`bundlefleet providers --rate-limit N/s`) and its call log. Past N
 * requests to one kind within the last second, a request is answered `429` with `Retry-After`
 * (whole seconds, at least 1, as real APIs send it) and has no effect. Every request is logged
 * with its arrival time, so tests can count calls per kind per second.
 */
import type { ProviderKind } from './client.js';

export interface ProviderCall {
  kind: ProviderKind;
  /** Arrival, milliseconds since the epoch. */
  at: number;
  /** When the answer went out (undefined: not yet, or never: a hang or a lost reply). */
  done?: number;
  limited: boolean;
}

/** The call log keeps this many entries, oldest dropped first. */
const MAX_CALLS = 200_000;

export class SimulatorRateLimit {
  private readonly log: ProviderCall[] = [];
  /** Arrival times of admitted requests within the last second, per kind. */
  private readonly recent = new Map<ProviderKind, number[]>();

  perSecond?: number;
  /** Retry-After sent with a 429; default: the whole seconds until the window has room again (at least 1). */
  retryAfterSeconds?: number;

  constructor(perSecond?: number, retryAfterSeconds?: number) {
    this.set(perSecond, retryAfterSeconds);
  }

  set(perSecond: number | undefined, retryAfterSeconds?: number): void {
    if (perSecond !== undefined && !(Number.isInteger(perSecond) && perSecond > 0)) throw new RangeError(`provider simulator rateLimit: must be a positive whole number of requests per second, got ${perSecond}`);
    if (retryAfterSeconds !== undefined && !(Number.isInteger(retryAfterSeconds) && retryAfterSeconds >= 0)) throw new RangeError(`provider simulator rateLimitRetryAfter: must be a whole number of seconds, got ${retryAfterSeconds}`);
    this.perSecond = perSecond;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** Logs a request; `retryAfter` (seconds) is set when it is over the limit and must be answered 429. */
  admit(kind: ProviderKind, now = Date.now()): { call: ProviderCall; retryAfter?: number } {
    const times = this.recent.get(kind) ?? [];
    while (times.length && times[0]! <= now - 1000) times.shift();
    const limited = this.perSecond !== undefined && times.length >= this.perSecond;
    if (!limited) times.push(now);
    this.recent.set(kind, times);
    const call: ProviderCall = { kind, at: now, limited };
    this.log.push(call);
    if (this.log.length > MAX_CALLS) this.log.splice(0, this.log.length - MAX_CALLS);
    if (!limited) return { call };
    return { call, retryAfter: this.retryAfterSeconds ?? Math.max(1, Math.ceil((times[0]! + 1000 - now) / 1000)) };
  }

  calls(): ProviderCall[] {
    return this.log.map((c) => ({ ...c }));
  }
}
