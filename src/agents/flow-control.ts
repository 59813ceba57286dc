/**
 * Flow control per provider kind, in front of every provider call an agent makes (issue 13):
 *
 * - a fleet-wide pause: a kind that answered 429/503 with Retry-After (or whose circuit opened) is
 *   paused for everyone until then; an agent about to call it parks its bundle instead. Pauses are
 *   read from PostgreSQL at most every `pauseRefreshMs` per process (and noted at once locally);
 * - a fleet-wide limit on calls in flight: leased slot rows that expire, taken for all waiting
 *   agents of this process in one statement, and handed straight to the next local waiter when
 *   released within HANDOFF_MS of being taken (so a busy worker costs about one statement per call);
 * - a fleet-wide rate: consecutive call slots reserved from a GCRA row in one statement for all
 *   waiting agents of this process, each agent then sleeping until its slot.
 *
 * A wait that would pass `maxWaitMs` parks the bundle instead (ProviderParked) so that no worker
 * slot is held for long. A kind without limits costs nothing beyond the cached pause check.
 */
import type pg from 'pg';
import { ProviderError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ProviderKind } from '../providers/client.js';
import { pauseKind, publishLimits, readPauses, releaseSlots, reserveRateSlots, takeSlots, type ProviderLimits } from '../providers/limits.js';

/** Flow control holds a call back: park the bundle for `retryAfterMs` (the kind is already paused, or only busy). */
export class ProviderParked extends ProviderError {
  constructor(readonly kind: ProviderKind, message: string, retryAfterMs: number) {
    super(message, 'transient', undefined, { retryAfterMs: Math.max(0, Math.round(retryAfterMs)) });
    this.name = 'ProviderParked';
  }
}

/** A circuit: `failures` transient errors in a row within `windowMs` pause the kind for `pauseMs`. */
export interface CircuitOptions {
  failures: number;
  windowMs: number;
  pauseMs: number;
}

export interface FlowControlOptions {
  pool: pg.Pool;
  limits: ProviderLimits;
  /** Who holds slots and writes pauses (the worker's name plus a random part). */
  holder: string;
  /** Longest an agent waits for a slot or a rate slot before parking its bundle. Default 2000 ms. */
  maxWaitMs?: number;
  /** Longest one provider request may take; sizes the slot leases. */
  providerTimeoutMs: number;
  pauseRefreshMs?: number;
  circuit?: CircuitOptions;
  logger: Logger;
}

/** A released slot goes to a local waiter only this soon after it was taken; later it goes back to the fleet (fairness). */
const HANDOFF_MS = 1_000;

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
  since: number;
}

export class FlowControl {
  private readonly maxWaitMs: number;
  private readonly pauses = new Map<ProviderKind, { until: number; reason: string }>();
  private pausesReadAt = -Infinity;
  private pausesReading: Promise<void> | undefined;
  private readonly slots = new Map<ProviderKind, SlotPool>();
  private readonly rates = new Map<ProviderKind, RatePump>();
  private readonly failures = new Map<ProviderKind, number[]>();

  constructor(private readonly opts: FlowControlOptions) {
    this.maxWaitMs = opts.maxWaitMs ?? 2_000;
    for (const [kind, limit] of Object.entries(opts.limits) as Array<[ProviderKind, NonNullable<ProviderLimits[ProviderKind]>]>) {
      if (limit.maxInFlight) this.slots.set(kind, new SlotPool(opts.pool, kind, limit.maxInFlight, opts.holder, this.maxWaitMs, HANDOFF_MS + this.maxWaitMs + opts.providerTimeoutMs + 5_000));
      if (limit.ratePerSecond) this.rates.set(kind, new RatePump(opts.pool, kind, limit.ratePerSecond, this.maxWaitMs));
    }
  }

  /** Writes this worker's limits to PostgreSQL (at start, before the first claim). */
  publish(): Promise<void> {
    return publishLimits(this.opts.pool, this.opts.limits, this.opts.holder);
  }

  /** Runs one provider call under the kind's pause, slot and rate; throws ProviderParked when it should not run now. */
  async call<T>(kind: ProviderKind, fn: () => Promise<T>): Promise<T> {
    await this.checkPause(kind);
    const slot = await this.slots.get(kind)?.acquire();
    try {
      await this.rates.get(kind)?.take();
      const result = await fn();
      this.failures.delete(kind);
      return result;
    } catch (err) {
      await this.noteFailure(kind, err);
      throw err;
    } finally {
      slot?.();
    }
  }

  /** A pause written elsewhere in this process (a park after a 429): obeyed at once, before the next read. */
  notePause(kind: ProviderKind, ms: number, reason: string): void {
    const until = Date.now() + ms;
    if ((this.pauses.get(kind)?.until ?? 0) < until) this.pauses.set(kind, { until, reason });
  }

  private async checkPause(kind: ProviderKind): Promise<void> {
    if (performance.now() - this.pausesReadAt >= (this.opts.pauseRefreshMs ?? 500)) {
      this.pausesReading ??= this.readPauses().finally(() => (this.pausesReading = undefined));
      await this.pausesReading;
    }
    const pause = this.pauses.get(kind);
    const remaining = pause ? pause.until - Date.now() : 0;
    if (pause && remaining > 0) throw new ProviderParked(kind, `${kind} paused for ${seconds(remaining)}: ${pause.reason}`, remaining);
  }

  /**
   * A failed read (PostgreSQL restarting) keeps the pauses known so far until the next refresh:
   * the read is advisory, and a provider call must not fail because of it.
   */
  private async readPauses(): Promise<void> {
    let rows: Awaited<ReturnType<typeof readPauses>>;
    try {
      rows = await readPauses(this.opts.pool);
    } catch (err) {
      this.pausesReadAt = performance.now();
      this.opts.logger.warn({ err: (err as Error).message }, 'could not read provider pauses; going on with the ones known');
      return;
    }
    this.pausesReadAt = performance.now();
    const now = Date.now();
    for (const [kind, p] of this.pauses) if (p.until <= now) this.pauses.delete(kind);
    for (const p of rows) this.notePause(p.kind, p.remainingMs, p.reason);
  }

  /**
   * The circuit: a run of transient failures (5xx, resets, timeouts; not a 429 with Retry-After,
   * which pauses by itself) within the window pauses the kind fleet-wide. The run is kept at one
   * short of the threshold afterwards: the first call after the pause is the half-open probe, and
   * one more failure opens the circuit again; a success closes it.
   */
  private async noteFailure(kind: ProviderKind, err: unknown): Promise<void> {
    const circuit = this.opts.circuit;
    if (!circuit || !(err instanceof ProviderError) || !err.transient || err.retryAfterMs !== undefined) return;
    const now = Date.now();
    const run = (this.failures.get(kind) ?? []).filter((t) => t > now - circuit.windowMs);
    run.push(now);
    this.failures.set(kind, run);
    if (run.length < circuit.failures) return;
    this.failures.set(kind, run.slice(-(circuit.failures - 1)));
    const reason = `circuit open: ${circuit.failures} failures in a row within ${seconds(circuit.windowMs)}`;
    this.notePause(kind, circuit.pauseMs, reason);
    this.opts.logger.warn({ provider: kind, pauseMs: circuit.pauseMs }, `${kind}: ${reason}; paused fleet-wide`);
    await pauseKind(this.opts.pool, kind, circuit.pauseMs, reason, this.opts.holder).catch((e: Error) => this.opts.logger.warn({ err: e.message }, 'could not write the circuit pause'));
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A kind's in-flight slots as this process holds them. acquire() resolves to the slot's release. */
class SlotPool {
  private readonly waiters: Waiter[] = [];
  private readonly handed = new Map<Waiter, { slot: number; takenAt: number }>();
  private toRelease: number[] = [];
  private pumping = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly kind: ProviderKind,
    private readonly max: number,
    private readonly holder: string,
    private readonly maxWaitMs: number,
    private readonly ttlMs: number,
  ) {}

  async acquire(): Promise<() => void> {
    let waiter!: Waiter;
    await new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject, since: performance.now() };
      this.waiters.push(waiter);
      void this.pump();
    });
    const lease = this.handed.get(waiter)!;
    this.handed.delete(waiter);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release(lease);
    };
  }

  private release(lease: { slot: number; takenAt: number }): void {
    const next = this.waiters.shift();
    if (next && performance.now() - lease.takenAt < HANDOFF_MS) {
      this.handed.set(next, lease);
      return next.resolve();
    }
    if (next) this.waiters.unshift(next);
    this.toRelease.push(lease.slot);
    // Releases of one tick go out in one statement.
    if (this.toRelease.length === 1) setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    const slots = this.toRelease;
    this.toRelease = [];
    // A failed release is not fatal: the lease expires after ttlMs.
    await releaseSlots(this.pool, this.kind, this.holder, slots).catch(() => {});
    if (this.waiters.length) void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    let backoff = 10;
    try {
      while (this.waiters.length) {
        let slots: number[];
        try {
          slots = await takeSlots(this.pool, this.kind, this.holder, Math.min(this.waiters.length, this.max), this.ttlMs);
        } catch (err) {
          for (const w of this.waiters.splice(0)) w.reject(err);
          return;
        }
        const takenAt = performance.now();
        for (const slot of slots) {
          const w = this.waiters.shift();
          if (!w) {
            this.toRelease.push(slot);
            if (this.toRelease.length === 1) setImmediate(() => void this.flush());
            continue;
          }
          this.handed.set(w, { slot, takenAt });
          w.resolve();
        }
        if (!this.waiters.length) break;
        const now = performance.now();
        for (const w of this.waiters.filter((x) => now - x.since >= this.maxWaitMs)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.reject(new ProviderParked(this.kind, `${this.kind} at its limit of ${this.max} calls in flight fleet-wide`, 1_000));
        }
        await sleep(backoff);
        backoff = slots.length ? 10 : Math.min(backoff * 2, 100);
      }
    } finally {
      this.pumping = false;
    }
  }
}

/** A kind's rate as this process uses it: one reservation statement for every agent waiting at that moment. */
class RatePump {
  private readonly waiters: Waiter[] = [];
  private pumping = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly kind: ProviderKind,
    private readonly perSecond: number,
    private readonly maxWaitMs: number,
  ) {}

  take(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject, since: performance.now() });
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.waiters.length) {
        const count = this.waiters.length;
        let grant;
        try {
          grant = await reserveRateSlots(this.pool, this.kind, count, this.maxWaitMs);
        } catch (err) {
          for (const w of this.waiters.splice(0)) w.reject(err);
          return;
        }
        if (!grant) {
          // The row is gone (limits removed by another worker's publish): let the calls through.
          for (const w of this.waiters.splice(0)) w.resolve();
          return;
        }
        if (grant.granted === 0) {
          const wait = grant.firstMs;
          for (const w of this.waiters.splice(0, count)) w.reject(new ProviderParked(this.kind, `${this.kind} at its rate of ${this.perSecond}/s fleet-wide: next free slot in ${seconds(wait)}`, wait));
          continue;
        }
        this.waiters.splice(0, grant.granted).forEach((w, i) => {
          const delay = grant.firstMs + i * grant.stepMs;
          if (delay <= 0) w.resolve();
          else setTimeout(w.resolve, delay);
        });
      }
    } finally {
      this.pumping = false;
    }
  }
}
