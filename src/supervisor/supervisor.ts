/**
 * The supervisor: detects and arranges, never calls a provider or runs business logic.
 * One pass at a time fleet-wide (a lease row that expires, lease.ts: a frozen holder loses it,
 * where it kept a session lock forever); `runOnce()` is the whole pass, and the `--loop` and
 * the pg-boss cron schedule only wrap it. Alerts are posted to the webhook after the lease is
 * given up, within a time budget (alert-delivery.ts).
 *
 * A pass, like River's job rescuer, is a loop over small batches per decision, each batch one
 * conditional UPDATE in its own short transaction together with the events it announces:
 *   1. orphans          running, owner's liveness lock gone       → pending/compensating now
 *   2. expired leases   running, locked_until passed              → pending/compensating after backoff
 *   3. waits            waiting past its deadline                 → compensating
 *   4. failed           transient & attempts left                 → pending after backoff
 *                       definitive no / attempts exhausted        → compensating
 *                       undo failed: undo attempts left → compensating, else → dead
 *   5. alerts           stuck / dead / reset too often; resolve the ones that no longer hold
 *   6. retention        prune finished bundles, old history and resolved alerts
 *   then, lease given up: deliver undelivered alerts to ALERT_WEBHOOK_URL (bounded)
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import { withTransaction } from '../db/pool.js';
import { publishEvents, type PendingEvent } from '../bundles/events.js';
import { bundleKind } from '../bundles/kinds.js';
import { rootLogger, type Logger } from '../logger.js';
import { anyOrphans, decideBatch, timeOutWaits, type DecisionLimits, type Selection } from './decisions.js';
import { raiseAlerts, resolveAlerts, type RaisedAlert } from './alerts.js';
import { deliverAlerts } from './alert-delivery.js';
import { acquireLease, releaseLease, SUPERVISOR_LEASE } from './lease.js';
import { pruneBatch } from './retention.js';
import { recordAlert, recordDecision } from '../bundles/tracing.js';

export interface SupervisorOptions {
  /** Attempts at booking before a bundle is compensated. Default 5. */
  maxAttempts?: number;
  /** Attempts at undoing before a bundle is dead. Default 10. */
  maxUndoAttempts?: number;
  /** A non-terminal bundle older than this gets a `stuck` alert. Default 900 s. */
  stuckAfterSeconds?: number;
  /** A bundle reset more than this many times gets a `resets` alert. Default 3. */
  maxResets?: number;
  /** First retry delay; doubles per failure, with jitter. Default 2 s. */
  backoffBaseSeconds?: number;
  /** Cap of the retry delay. Default 300 s. */
  backoffMaxSeconds?: number;
  /** Finished bundles, history and resolved alerts older than this are pruned. Default 30 days. */
  retentionSeconds?: number;
  /** Rows per statement. Default 500. */
  batchSize?: number;
  /** Batches per decision per pass, so one pass stays short. Default 20. */
  maxBatches?: number;
  /** POST each alert here (JSON); a failed post is retried after a backoff. */
  alertWebhookUrl?: string;
  /** Time one pass may spend posting alerts, after its lease is given up. Default 5000 ms. */
  alertDeliveryBudgetMs?: number;
  /**
   * `await`: the pass returns after its deliveries (one-shot runs, tests). `background`: the pass
   * returns at once and deliveries go on beside the next passes, one run at a time (`--loop`).
   */
  alertDelivery?: 'await' | 'background';
  /** How long a pass holds the fleet-wide lease before it must renew it (between batches). Default 15 s. */
  leaseSeconds?: number;
  actor?: string;
  logger?: Logger;
  onAction?: (action: string, count: number) => void;
}

export interface PassReport {
  ran: boolean;
  orphans: number;
  expired: number;
  failed: number;
  waits: number;
  to_pending: number;
  to_compensating: number;
  to_dead: number;
  alerts_raised: number;
  alerts_resolved: number;
  alerts_delivered: number;
  pruned: number;
}

const emptyReport = (ran: boolean): PassReport => ({
  ran, orphans: 0, expired: 0, failed: 0, waits: 0, to_pending: 0, to_compensating: 0, to_dead: 0,
  alerts_raised: 0, alerts_resolved: 0, alerts_delivered: 0, pruned: 0,
});

export function supervisorDefaults(opts: SupervisorOptions): Required<Omit<SupervisorOptions, 'alertWebhookUrl' | 'logger' | 'onAction'>> & SupervisorOptions {
  return {
    maxAttempts: 5,
    maxUndoAttempts: 10,
    stuckAfterSeconds: 900,
    maxResets: 3,
    backoffBaseSeconds: 2,
    backoffMaxSeconds: 300,
    retentionSeconds: 30 * 86_400,
    batchSize: 500,
    maxBatches: 20,
    actor: 'supervisor',
    alertDeliveryBudgetMs: 5_000,
    alertDelivery: 'await',
    leaseSeconds: 15,
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
  };
}

/** Background deliveries per pool, so a `--loop` never runs two at once. */
const deliveries = new WeakMap<pg.Pool, Promise<void>>();

/** Waits for a background alert delivery still running on `pool` (bounded by its budget). */
export async function settleAlertDeliveries(pool: pg.Pool): Promise<void> {
  await deliveries.get(pool);
}

/**
 * This process's lease holder name. Per process, not per pass: a pass cut off before it could give
 * the lease up (PostgreSQL restarting mid-pass) would otherwise keep this very supervisor out for a
 * whole lease — measured in the chaos run, recovery after the restart took 28 s instead of about 1 s.
 * A frozen process that resumes after another took the lease still decides nothing (the holder
 * differs); passes within one process run one at a time (below).
 */
const PROCESS_HOLDER = `${hostname()}.${process.pid}.${randomUUID().slice(0, 8)}`;

/** The lease holder name of this process's passes run as `actor`. */
export function supervisorHolder(actor = 'supervisor'): string {
  return `${actor}.${PROCESS_HOLDER}`;
}

/** The pass running in this process, per pool: a second one waits for it rather than sharing the lease. */
const localPasses = new WeakMap<pg.Pool, Promise<unknown>>();

/** Runs `work` after this process's previous pass on `pool`, never beside it. */
async function oneAtATime<T>(pool: pg.Pool, work: () => Promise<T>): Promise<T> {
  const previous = localPasses.get(pool) ?? Promise.resolve();
  const pass = previous.catch(() => {}).then(work);
  localPasses.set(pool, pass);
  try {
    return await pass;
  } finally {
    if (localPasses.get(pool) === pass) localPasses.delete(pool);
  }
}

/** One supervisor pass. Returns `ran: false` at once when another process's pass holds the fleet-wide lease. */
export function runOnce(pool: pg.Pool, options: SupervisorOptions = {}): Promise<PassReport> {
  return oneAtATime(pool, () => runPass(pool, options));
}

/**
 * The orphan watch: only decision 1 (running, owner's liveness lock gone → back now), for
 * `supervise --loop` to run every few hundred milliseconds between its passes. A SIGKILLed
 * worker's bundles then wait for this, not for the next full pass: with passes every 1 s,
 * recovery (kill → every bundle running on another worker) had p95 0.87 s, most of it the wait
 * for the pass. It reads first (`anyOrphans`, one statement, no lock) and takes the lease only
 * when there is something to reset, so an idle fleet pays one cheap read per check.
 */
export function resetOrphans(pool: pg.Pool, options: SupervisorOptions = {}): Promise<PassReport> {
  return oneAtATime(pool, async () => {
    const report = emptyReport(false);
    if (!(await anyOrphans(pool))) return report;
    const opts = supervisorDefaults(options);
    const log = (opts.logger ?? rootLogger()).child({ role: 'supervisor' });
    const holder = supervisorHolder(opts.actor);
    if (!(await acquireLease(pool, SUPERVISOR_LEASE, holder, opts.leaseSeconds))) return report;
    report.ran = true;
    try {
      const renew = async () => {
        if (!(await acquireLease(pool, SUPERVISOR_LEASE, holder, opts.leaseSeconds))) throw new LeaseLost();
      };
      await decide(pool, 'orphans', { ...opts, actor: opts.actor, leaseHolder: holder }, opts.maxBatches, report, log, opts.onAction, renew);
    } catch (err) {
      if (!(err instanceof LeaseLost)) throw err;
    } finally {
      await releaseLease(pool, SUPERVISOR_LEASE, holder).catch(() => {});
    }
    return report;
  });
}

async function runPass(pool: pg.Pool, options: SupervisorOptions): Promise<PassReport> {
  const opts = supervisorDefaults(options);
  const log = (opts.logger ?? rootLogger()).child({ role: 'supervisor' });
  const holder = supervisorHolder(opts.actor);
  if (!(await acquireLease(pool, SUPERVISOR_LEASE, holder, opts.leaseSeconds))) {
    log.info('another supervisor pass is running; skipping this one');
    return emptyReport(false);
  }
  const report = emptyReport(true);
  try {
    const limits: DecisionLimits = { ...opts, actor: opts.actor, leaseHolder: holder };
    const renew = async () => {
      if (!(await acquireLease(pool, SUPERVISOR_LEASE, holder, opts.leaseSeconds))) throw new LeaseLost();
    };
    for (const selection of ['orphans', 'expired', 'waits', 'failed'] as const) {
      await decide(pool, selection, limits, opts.maxBatches, report, log, opts.onAction, renew);
    }
    await renew();
    await handleAlerts(pool, opts, report, log);
    for (let i = 0; i < opts.maxBatches; i++) {
      await renew();
      const n = await pruneBatch(pool, opts.retentionSeconds, opts.batchSize);
      report.pruned += n;
      if (n === 0) break;
    }
    if (report.pruned) log.info({ pruned: report.pruned }, 'pruned old rows');
  } catch (err) {
    if (!(err instanceof LeaseLost)) throw err;
    log.warn('supervisor lease lost mid-pass (this pass was too slow or froze); another pass carries on');
  } finally {
    await releaseLease(pool, SUPERVISOR_LEASE, holder).catch(() => {});
  }
  if (opts.alertWebhookUrl) {
    const url = opts.alertWebhookUrl;
    const deliver = async () => {
      report.alerts_delivered = await deliverAlerts(pool, { url, budgetMs: opts.alertDeliveryBudgetMs, logger: log });
    };
    if (opts.alertDelivery === 'await') await deliver();
    else if (!deliveries.has(pool)) {
      const running = deliver()
        .catch((err) => log.warn({ err: (err as Error).message }, 'alert delivery failed; will retry'))
        .finally(() => deliveries.delete(pool));
      deliveries.set(pool, running);
    }
  }
  return report;
}

class LeaseLost extends Error {}

async function decide(pool: pg.Pool, selection: Selection | 'waits', limits: DecisionLimits, maxBatches: number, report: PassReport, log: Logger, onAction: ((action: string, count: number) => void) | undefined, renew: () => Promise<void>): Promise<void> {
  for (let i = 0; i < maxBatches; i++) {
    if (i > 0) await renew();
    const startedAt = Date.now();
    // The decision and the events it announces (VipBundleFailed_v1 for dead) commit together.
    const moved = await withTransaction(pool, async (client) => {
      const rows = selection === 'waits' ? await timeOutWaits(client, limits) : await decideBatch(client, selection, limits);
      const events: PendingEvent[] = [];
      for (const r of rows) {
        const name = r.to_state === 'dead' ? bundleKind(r.kind).events.failed : undefined;
        if (name) events.push({ name, correlationId: r.id, traceparent: r.trace_context, data: { vip_bundle_id: r.id, booking_id: r.booking_id, outcome: 'dead' } });
      }
      await publishEvents(client, events);
      return rows;
    });
    if (!moved.length) return;
    report[selection] += moved.length;
    for (const r of moved) {
      if (r.to_state === 'pending') report.to_pending++;
      else if (r.to_state === 'compensating') report.to_compensating++;
      else report.to_dead++;
      const level = r.to_state === 'dead' ? 'error' : 'info';
      log[level]({ bundleId: r.id, attempt: r.attempt, from: r.from_state, to: r.to_state, decision: selection }, `supervisor: ${selection} → ${r.to_state}`);
      recordDecision(selection, r, limits.actor, startedAt);
    }
    onAction?.(selection, moved.length);
    if (moved.length < limits.batchSize) return;
  }
}

async function handleAlerts(pool: pg.Pool, opts: ReturnType<typeof supervisorDefaults>, report: PassReport, log: Logger): Promise<void> {
  const startedAt = Date.now();
  const raised = await withTransaction(pool, async (client) => {
    const alerts = await raiseAlerts(client, { stuckAfterSeconds: opts.stuckAfterSeconds, maxResets: opts.maxResets, batchSize: opts.batchSize });
    await publishEvents(client, alerts.map((a: RaisedAlert) => ({ name: 'BundleStuck_v1' as const, correlationId: a.bundle_id, traceparent: a.trace_context, data: { alert_id: a.id, vip_bundle_id: a.bundle_id, kind: a.kind, message: a.message } })));
    return alerts;
  });
  report.alerts_raised = raised.length;
  for (const a of raised) {
    log[a.kind === 'dead' ? 'error' : 'warn']({ bundleId: a.bundle_id, alertId: a.id, kind: a.kind }, `alert: ${a.message}`);
    recordAlert(a, opts.actor, startedAt);
  }
  if (raised.length) opts.onAction?.('alert', raised.length);
  report.alerts_resolved = await resolveAlerts(pool);
}
