/**
 * A worker process's scheduler: wakes on NOTIFY, on a freed agent slot or on its poll interval;
 * claims as many due bundles as it has free agent slots in one statement; hands each to an agent.
 * Shutdown is in two stages (see stop()).
 */
import { hostname } from 'node:os';
import type pg from 'pg';
import { createPool } from '../db/pool.js';
import { allowNamedStatements } from '../db/statements.js';
import { runAgent } from '../agents/agent.js';
import { Finisher } from '../agents/finisher.js';
import { StepWriter } from '../agents/step-writer.js';
import { ProviderClient } from '../providers/client.js';
import { rootLogger, type Logger } from '../logger.js';
import { claimBundles, claimReconciliations, type ClaimedBundle } from './claim.js';
import { reconcileBundle } from '../agents/reconcile.js';
import { unrunnableKindVersions } from '../bundles/read.js';
import { WorkerLiveness, type LostLiveness } from './liveness.js';
import { grantedAdvisoryLocks, lockRowKey, workerLockKey } from '../bundles/worker-locks.js';
import { releaseBundles } from './release.js';
import { LeaseDeadline } from '../agents/lease-deadline.js';
import { FlowControl } from '../agents/flow-control.js';
import { attemptSpan, reconcileSpan } from '../bundles/tracing.js';
import { ExchangeRecorder } from '../agents/exchange-recorder.js';
import type { WorkerOptions } from './worker-options.js';

export type { WorkerOptions } from './worker-options.js';

interface InFlight {
  /** The claimed bundle an agent runs; undefined for a reconciliation pass (nothing to release). */
  bundle?: ClaimedBundle;
  /** The liveness id it was claimed under: when that id's lock is lost, its agents are aborted. */
  workerId: string;
  abort: AbortController;
  done: Promise<void>;
}

/** In-flight work is keyed by (bundle, attempt): after a lost liveness lock this worker may claim the same bundle again while the old agent winds down. */
const inFlightKey = (b: { id: string; attempt: number }) => `${b.id}:${b.attempt}`;

/** How often a worker looks for bundles of kind versions it does not carry, to say so. */
const KIND_CHECK_INTERVAL_MS = 30_000;

/** How often a worker looks for due reconciliation passes (one short statement). */
const RECONCILE_CLAIM_INTERVAL_MS = 1_000;

export class Worker {
  readonly pool: pg.Pool;
  private readonly liveness: WorkerLiveness;
  private readonly finisher: Finisher;
  private readonly stepWriter: StepWriter;
  private readonly providers: ProviderClient;
  private readonly flow: FlowControl;
  private readonly exchanges: ExchangeRecorder;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly log: Logger;
  private readonly opts: Required<Pick<WorkerOptions, 'concurrency' | 'leaseSeconds' | 'pollIntervalMs' | 'drainTimeoutMs' | 'name'>>;
  private stopping = false;
  private lastReconcileClaim = 0;
  private lastKindCheck = -Infinity;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /**
   * A wake (NOTIFY, freed slot) that came while no sleep was waiting, i.e. during a claim: the
   * bundle it announces may have committed after that claim's snapshot, so the next sleep must
   * not wait out the poll interval (test/wakes.test.ts).
   */
  private wokenWhileBusy = false;
  /** In the backoff after a failed claim, which a NOTIFY or a freed slot must not cut short (only stop does). */
  private backingOff = false;

  constructor(private readonly options: WorkerOptions) {
    this.opts = {
      concurrency: options.concurrency ?? 10,
      leaseSeconds: options.leaseSeconds ?? 60,
      pollIntervalMs: options.pollIntervalMs ?? 1000,
      drainTimeoutMs: options.drainTimeoutMs ?? 20_000,
      name: options.name ?? `${hostname()}-${process.pid}`,
    };
    this.log = (options.logger ?? rootLogger()).child({ worker: this.opts.name });
    this.pool = createPool(options.databaseUrl, {
      max: Math.min(this.opts.concurrency + 2, 20),
      applicationName: `bundlefleet worker ${this.opts.name}`,
      onError: (err) => this.log.warn({ err: err.message }, 'idle database connection lost'),
      // Above the agents' statement_timeout (8 s): only a connection that stopped answering reaches
      // it. Each half-open connection costs the query that picks it up this long, then is discarded
      // (the chaos run's half-open mode stalled re-claims for 27 s with a 30 s bound).
      queryTimeoutMs: 10_000,
    });
    // Without a session-URL split the pool's URL is a session (the liveness connection proves it),
    // so small batches may go as named statements (db/statements.ts: 5b 1.10× measured).
    if (!options.sessionDatabaseUrl || options.sessionDatabaseUrl === options.databaseUrl) allowNamedStatements(this.pool);
    this.liveness = new WorkerLiveness(options.sessionDatabaseUrl ?? options.databaseUrl, this.opts.name);
    this.liveness.on('due', () => this.nudge());
    // The LISTEN went with the connection: claim (and listen again) now rather than at the next poll.
    this.liveness.on('lost', (lost: LostLiveness) => {
      void this.abandon(lost);
      this.nudge();
    });
    this.finisher = new Finisher(this.pool);
    this.stepWriter = new StepWriter(this.pool);
    this.exchanges = new ExchangeRecorder(this.pool, this.log);
    this.providers = new ProviderClient(options.providerUrls, { timeoutMs: options.providerTimeoutMs ?? 5000, onExchange: this.exchanges.record });
    // Per-provider pauses and fleet-wide limits in front of every provider call (flow-control.ts).
    this.flow = new FlowControl({ pool: this.pool, limits: options.providerLimits ?? {}, holder: this.opts.name, leaseSeconds: this.opts.leaseSeconds, providerTimeoutMs: this.providers.timeoutMs, circuit: options.providerCircuit, logger: this.log });
  }

  get workerId(): string | undefined {
    return this.liveness.workerId;
  }

  get activeCount(): number {
    return this.inFlight.size;
  }

  get draining(): boolean {
    return this.stopping;
  }

  start(): void {
    if (this.loop) return;
    this.log.info({ concurrency: this.opts.concurrency, leaseSeconds: this.opts.leaseSeconds }, 'worker started');
    this.loop = this.run();
  }

  /** Agent slots one claim may fill now. */
  private claimable(): number {
    return Math.min(this.opts.concurrency - this.inFlight.size, this.options.claimBatchSize ?? 500);
  }

  /**
   * The liveness lock of a worker id is gone or in doubt (connection dropped, blackholed, its
   * backend terminated, or a pooler recycled it): the supervisor may already be resetting its
   * bundles. Its agents stop now — no further provider call — rather than race the new attempts
   * (fencing makes their writes harmless either way), their bundles are released for an immediate
   * re-claim (fenced on attempt; no failure counted), and the old backend, if it still holds the
   * lock behind a half-open socket, is terminated so that the lock really goes.
   */
  private async abandon(lost: LostLiveness): Promise<void> {
    const mine = [...this.inFlight.values()].filter((f) => f.workerId === lost.workerId);
    const bundles = mine.flatMap((f) => (f.bundle ? [{ id: f.bundle.id, attempt: f.bundle.attempt }] : []));
    this.log.warn({ lostId: lost.workerId, reason: lost.reason, aborted: mine.length }, 'liveness lock lost; aborting its agents; a new worker id will be taken before the next claim');
    for (const f of mine) f.abort.abort(new Error('liveness lock lost'));
    try {
      if (lost.backendPid !== undefined) {
        await this.pool.query(
          `SELECT pg_terminate_backend(l.pid) FROM ${grantedAdvisoryLocks('l')} AND l.pid = $2 AND ${lockRowKey('l')} = ${workerLockKey('$1')}`,
          [lost.workerId, lost.backendPid],
        );
      }
      await Promise.race([Promise.all(mine.map((f) => f.done)), new Promise((r) => setTimeout(r, 2_000).unref())]);
      const released = await releaseBundles(this.pool, lost.workerId, bundles, 'released: liveness lock lost');
      if (released.length) this.log.info({ released: released.length }, 'released the bundles of the lost worker id');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not release the lost id\'s bundles; the supervisor will reset them');
    }
  }

  /** Claims once for every free slot and starts the agents; returns how many were claimed. */
  async claimOnce(free = this.claimable()): Promise<number> {
    if (free <= 0 || this.stopping) return 0;
    const workerId = await this.liveness.ensure();
    await this.flow.publish();
    // The agents' lease clocks start before the claim is sent, so they never run past the lease PostgreSQL holds.
    const claimSentAt = performance.now();
    const claimed = await claimBundles(this.pool, { workerId, limit: free, leaseSeconds: this.opts.leaseSeconds, kinds: this.options.kinds });
    if (claimed.length) this.options.onClaim?.(claimed.length);
    for (const bundle of claimed) this.dispatch(bundle, workerId, claimSentAt);
    await this.sideWork(workerId, free - claimed.length);
    return claimed.length;
  }

  /**
   * Bundles of a kind version this worker does not carry are left for a worker that does (the
   * claim skips them); say so in the log and through onUnrunnable (a metric), never silently.
   */
  private async checkKindVersions(): Promise<void> {
    const counts = await unrunnableKindVersions(this.pool, this.options.kinds, { claimableOnly: true });
    this.options.onUnrunnable?.(counts);
    for (const c of counts) {
      this.log.warn({ kind: c.kind, version: c.version, bundles: c.bundles }, `${c.bundles} unfinished ${c.kind} v${c.version} bundles: this worker does not carry that version and leaves them for one that does`);
    }
  }

  /** Runs due reconciliation passes of undone bundles in free slots, looking at most once a second. */
  /** Work beside the claims, each at most at its interval: the kind-version check and due reconciliations. */
  private async sideWork(workerId: string, free: number): Promise<void> {
    const now = performance.now();
    if (now - this.lastKindCheck >= KIND_CHECK_INTERVAL_MS) {
      this.lastKindCheck = now;
      await this.checkKindVersions();
    }
    await this.claimReconciliations(workerId, free, now);
  }

  private async claimReconciliations(workerId: string, free: number, now: number): Promise<void> {
    if (free <= 0 || now - this.lastReconcileClaim < RECONCILE_CLAIM_INTERVAL_MS) return;
    this.lastReconcileClaim = now;
    const due = await claimReconciliations(this.pool, { workerId, limit: Math.min(free, 10), leaseSeconds: this.opts.leaseSeconds, kinds: this.options.kinds });
    for (const claim of due) {
      const abort = new AbortController();
      const key = `reconcile:${claim.id}`;
      const done = reconcileSpan(claim, workerId, () => reconcileBundle(claim, { pool: this.pool, providers: this.providers, workerId, logger: this.log, signal: abort.signal }))
        .then(() => undefined)
        .catch((err) => this.log.warn({ bundleId: claim.id, err: (err as Error).message }, 'reconciliation stopped on an error; it will run again'))
        .finally(() => {
          this.inFlight.delete(key);
          this.nudge();
        });
      this.inFlight.set(key, { workerId, abort, done });
    }
  }

  private dispatch(bundle: ClaimedBundle, workerId: string, claimSentAt: number): void {
    this.options.onAgentStart?.(bundle.id);
    const abort = new AbortController();
    const key = inFlightKey(bundle);
    // The attempt is a span in the bundle's trace (stored at enqueue), begun at the claim.
    const done = attemptSpan(bundle, workerId, performance.timeOrigin + claimSentAt, () => runAgent(bundle, {
      pool: this.pool,
      providers: this.providers,
      finisher: this.finisher,
      steps: this.stepWriter,
      workerId,
      leaseSeconds: this.opts.leaseSeconds,
      lease: new LeaseDeadline(this.opts.leaseSeconds, claimSentAt),
      providerRetries: this.options.providerRetries,
      waitTimeoutSeconds: this.options.waitTimeoutSeconds,
      flow: this.flow,
      logger: this.log,
      signal: abort.signal,
      onStep: this.options.onStep,
    }))
      .then((outcome) => this.options.onOutcome?.(outcome))
      .catch((err) => {
        // Database trouble mid-agent (PostgreSQL restarting): the bundle stays leased to this
        // attempt and the supervisor resets it; fencing keeps any later write of ours harmless.
        this.log.error({ bundleId: bundle.id, err: (err as Error).message }, 'agent stopped on an error');
      })
      .finally(() => {
        this.inFlight.delete(key);
        this.nudge();
      });
    this.inFlight.set(key, { bundle, workerId, abort, done });
  }

  private async run(): Promise<void> {
    let errorDelay = 100;
    while (!this.stopping) {
      let claimed = 0;
      try {
        const free = this.claimable();
        claimed = await this.claimOnce(free);
        errorDelay = 100;
        // A full batch means more may be due: claim again as soon as slots allow.
        if (claimed > 0 && claimed === free) continue;
      } catch (err) {
        if (this.stopping) break;
        this.log.error({ err: (err as Error).message }, 'claim failed; retrying');
        this.backingOff = true;
        await this.sleep(errorDelay).finally(() => (this.backingOff = false));
        errorDelay = Math.min(errorDelay * 2, 5_000);
        continue;
      }
      // stop() during the claim found no sleep to end: the drain must not wait for the poll.
      if (this.stopping) break;
      // The poll wait gives way to a wake that came during the claim.
      if (this.wokenWhileBusy) {
        this.wokenWhileBusy = false;
        continue;
      }
      await this.sleep(this.opts.pollIntervalMs);
    }
  }

  /** Ends the current sleep, or the next one at once when the loop is busy claiming. */
  private nudge(): void {
    if (this.backingOff) return;
    if (this.wake) this.wake();
    else this.wokenWhileBusy = true;
  }

  /** Sleeps until woken (NOTIFY, a freed slot, stop) or the timeout. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      const self = this;
      function finish() {
        clearTimeout(timer);
        if (self.wake === finish) self.wake = undefined;
        resolve();
      }
      this.wake = finish;
    });
  }

  /**
   * Graceful stop: stop claiming, let in-flight agents finish within the drain timeout, then
   * abort the rest and release their bundles for immediate re-claim by another worker.
   */
  async stop(drainTimeoutMs = this.opts.drainTimeoutMs): Promise<{ released: number }> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    const drained = await Promise.race([
      Promise.all([...this.inFlight.values()].map((f) => f.done)).then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), drainTimeoutMs).unref()),
    ]);
    let released: string[] = [];
    if (!drained) {
      const left = [...this.inFlight.values()];
      for (const f of left) f.abort.abort();
      const bundles = left.flatMap((f) => (f.bundle ? [{ id: f.bundle.id, attempt: f.bundle.attempt }] : []));
      released = await releaseBundles(this.pool, this.workerId ?? this.opts.name, bundles).catch((err) => {
        this.log.error({ err: (err as Error).message }, 'could not release bundles; the supervisor will reset them');
        return [];
      });
      await Promise.race([Promise.all(left.map((f) => f.done)), new Promise((r) => setTimeout(r, 2_000).unref())]);
    }
    await this.liveness.close();
    await this.exchanges.flush();
    await this.pool.end();
    this.log.info({ released: released.length }, 'worker stopped');
    return { released: released.length };
  }
}
