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
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { ProviderError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ProviderKind } from '../providers/client.js';
import { pauseKind, publishLimits, readPauses, type ProviderLimits } from '../providers/limits.js';
import { HANDOFF_MS, ProviderParked, RatePump, SlotPool, seconds } from './flow-waits.js';

export { ProviderParked } from './flow-waits.js';

/** A circuit: `failures` transient errors in a row within `windowMs` pause the kind for `pauseMs`. */
export interface CircuitOptions {
  failures: number;
  windowMs: number;
  pauseMs: number;
}

export interface FlowControlOptions {
  pool: pg.Pool;
  limits: ProviderLimits;
  /** Who holds slots and writes pauses: the worker's name (a random part is added). */
  holder: string;
  /** Longest an agent waits for a slot or a rate slot before parking its bundle. Default 2000 ms, at most a quarter of the lease. */
  maxWaitMs?: number;
  /** The workers' lease: a wait for a provider stays well inside it. */
  leaseSeconds?: number;
  /** Longest one provider request may take; sizes the slot leases. */
  providerTimeoutMs: number;
  pauseRefreshMs?: number;
  circuit?: CircuitOptions;
  logger: Logger;
}


export class FlowControl {
  private readonly maxWaitMs: number;
  private readonly pauses = new Map<ProviderKind, { until: number; reason: string }>();
  private pausesReadAt = -Infinity;
  private pausesReading: Promise<void> | undefined;
  private readonly slots = new Map<ProviderKind, SlotPool>();
  private readonly rates = new Map<ProviderKind, RatePump>();
  private readonly failures = new Map<ProviderKind, number[]>();
  private readonly holder: string;
  private published: Promise<void> | undefined;

  constructor(private readonly opts: FlowControlOptions) {
    this.maxWaitMs = Math.min(opts.maxWaitMs ?? 2_000, ((opts.leaseSeconds ?? Infinity) * 1000) / 4);
    // Slots are leased to this process alone, even when another process runs under the same name.
    this.holder = `${opts.holder}-${randomBytes(4).toString('hex')}`;
    for (const [kind, limit] of Object.entries(opts.limits) as Array<[ProviderKind, NonNullable<ProviderLimits[ProviderKind]>]>) {
      if (limit.maxInFlight) this.slots.set(kind, new SlotPool(opts.pool, kind, limit.maxInFlight, this.holder, this.maxWaitMs, HANDOFF_MS + this.maxWaitMs + opts.providerTimeoutMs + 5_000));
      if (limit.ratePerSecond) this.rates.set(kind, new RatePump(opts.pool, kind, limit.ratePerSecond, this.maxWaitMs));
    }
  }

  /** Writes this worker's limits to PostgreSQL, once (before the first claim; tried again after a failure). */
  publish(): Promise<void> {
    this.published ??= publishLimits(this.opts.pool, this.opts.limits, this.holder).catch((err: unknown) => {
      this.published = undefined;
      throw err;
    });
    return this.published;
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
    await pauseKind(this.opts.pool, kind, circuit.pauseMs, reason, this.holder).catch((e: Error) => this.opts.logger.warn({ err: e.message }, 'could not write the circuit pause'));
  }
}
