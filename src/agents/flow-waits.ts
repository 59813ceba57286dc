/**
 * The waits of flow control (flow-control.ts) for one provider kind in one process: its in-flight
 * slots and its rate, each costing one statement for every agent waiting at that moment.
 */
import type pg from 'pg';
import { ProviderError } from '../errors.js';
import type { ProviderKind } from '../providers/client.js';
import { releaseSlots, reserveRateSlots, takeSlots } from '../providers/limits.js';

/** Flow control holds a call back: park the bundle for `retryAfterMs` (the kind is already paused, or only busy). */
export class ProviderParked extends ProviderError {
  constructor(readonly kind: ProviderKind, message: string, retryAfterMs: number) {
    super(message, 'transient', undefined, { retryAfterMs: Math.max(0, Math.round(retryAfterMs)) });
    this.name = 'ProviderParked';
  }
}

/** A released slot goes to a local waiter only this soon after it was taken; later it goes back to the fleet (fairness). */
export const HANDOFF_MS = 1_000;

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
  since: number;
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A kind's in-flight slots as this process holds them. acquire() resolves to the slot's release. */
export class SlotPool {
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
export class RatePump {
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
