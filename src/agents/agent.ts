/**
 * An agent runs one claimed bundle: its next steps in order (phase `book`), or the undo of every
 * step that may have reached a provider, in reverse order (phase `undo`). Before each provider
 * call it records the intent; after it, the outcome. Every write is fenced on the attempt: when
 * one reports that a newer attempt owns the bundle, the agent stops without touching anything.
 * Before every provider call and every retry it checks its own lease deadline (lease-deadline.ts).
 * A step whose outcome is unknown (an earlier attempt recorded the intent and never the outcome,
 * or the provider said no to one of several requests with the key) is resolved by asking the
 * provider what it holds for the key before replaying or cancelling it.
 * It never decides to retry the bundle or give up: it records the failure and the supervisor decides.
 */
import pRetry, { AbortError } from 'p-retry';
import type pg from 'pg';
import { ProviderError, coerceError } from '../errors.js';
import { bundleKind, stepIdempotencyKey, type StepContext, type StepDefinition } from '../bundles/kinds.js';
import type { ProviderClient, ProviderHolding } from '../providers/client.js';
import type { ClaimedBundle } from '../scheduler/claim.js';
import { scrubText, type Logger } from '../logger.js';
import { enterWait, loadSteps, recordCancelled, recordFailure, recordNote, type Fence, type StepRow } from './fenced-writes.js';
import type { Finisher, FinishRequest } from './finisher.js';
import type { BookedStep, StepWriter } from './step-writer.js';
import { LeaseDeadline, LeaseExpired } from './lease-deadline.js';
import type { FlowControl } from './flow-control.js';
import { parkBundle, parkRequest } from './park.js';
import { stepSpan } from '../bundles/tracing.js';
import { traceparentOf } from '../tracing.js';
import { formatDuration, logFencedOut, logRetry } from './agent-log.js';

export interface AgentDeps {
  pool: pg.Pool;
  providers: ProviderClient;
  finisher: Finisher;
  /** Writes step intents and outcomes, batched with other agents' (fenced per row). */
  steps: StepWriter;
  workerId: string;
  leaseSeconds: number;
  /** The lease as this agent's clock sees it, started before the claim was sent; default: now. */
  lease?: LeaseDeadline;
  /** Deadline of a wait step per kind, overriding the kind's default (worker --wait-timeout). */
  waitTimeoutSeconds?: Record<string, number>;
  /** Retries of a transient provider error within one attempt (p-retry), default 2. */
  providerRetries?: number;
  /** First backoff between those retries, default 100 ms. */
  providerRetryMs?: number;
  /** Per-provider pauses and limits in front of every call (flow-control.ts); none when absent. */
  flow?: FlowControl;
  logger: Logger;
  signal?: AbortSignal;
  onStep?: (step: string, outcome: string, seconds: number) => void;
}

export type AgentOutcome = 'completed' | 'compensated' | 'waiting' | 'parked' | 'failed' | 'fenced' | 'aborted';

class Fenced extends Error {
  constructor() {
    super('a newer attempt owns this bundle');
  }
}

/** What one agent run carries from step to step. */
interface Run {
  bundle: ClaimedBundle;
  deps: AgentDeps;
  fence: Fence;
  lease: LeaseDeadline;
  log: Logger;
  current?: { step: StepDefinition; position: number };
  /** When this agent started, for the "bundle completed in …" line. */
  started: number;
}

/**
 * Calls a provider with p-retry: transient errors are retried with the same key, permanent ones
 * stop at once, and no try starts unless a whole request fits before the lease deadline. Each try
 * passes the kind's flow control first (its wait comes before the lease check); an error that
 * names a time to come back (Retry-After, a paused kind) is not retried: the bundle is parked.
 */
function callWithRetry<T>(run: Run, fn: () => Promise<T>): Promise<T> {
  const { deps, lease } = run;
  const kind = run.current?.step.provider;
  const attempt = () => {
    lease.assertRoomFor(deps.providers.timeoutMs);
    return fn();
  };
  const onFailedAttempt = run.current ? logRetry(run.log, run.current.step.name) : undefined;
  return pRetry(
    async () => {
      try {
        return await (deps.flow && kind ? deps.flow.call(kind, attempt) : attempt());
      } catch (err) {
        if (err instanceof LeaseExpired || (err instanceof ProviderError && (!err.transient || err.retryAfterMs !== undefined))) throw new AbortError(err);
        throw err;
      }
    },
    {
      // Every option p-retry fills in is given (its defaults where ours are not): it copies the
      // options and fills in the missing ones with `??=`, and in Node 20's V8 that copy got a new
      // hidden class on every call, garbage that survived young-generation GCs (about a fifth of
      // what the worker moved to the old generation; bench scenario 7, worker RSS).
      retries: deps.providerRetries ?? 2,
      factor: 2,
      minTimeout: deps.providerRetryMs ?? 100,
      maxTimeout: 1_000,
      maxRetryTime: Number.POSITIVE_INFINITY,
      randomize: false,
      signal: deps.signal,
      onFailedAttempt: onFailedAttempt ?? noRetryLog,
      shouldRetry: () => !deps.signal?.aborted,
      shouldConsumeRetry: everyRetryCounts,
    },
  );
}

/** p-retry's own defaults for the two hooks, passed in (see callWithRetry). */
const noRetryLog = () => {};
const everyRetryCounts = () => true;

function classify(err: unknown): 'transient' | 'permanent' {
  return err instanceof ProviderError && !err.transient ? 'permanent' : 'transient';
}

/** Runs a fenced write; throws Fenced when a newer attempt owns the bundle, extends the local lease otherwise. */
async function fenced(run: Run, write: () => Promise<unknown>): Promise<void> {
  const sentAt = performance.now();
  const result = await write();
  if (result === false || result === null) throw new Fenced();
  run.lease.extendFrom(sentAt);
}

export async function runAgent(bundle: ClaimedBundle, deps: AgentDeps): Promise<AgentOutcome> {
  const kind = bundleKind(bundle.kind, bundle.kind_version);
  const run: Run = {
    bundle,
    deps,
    fence: { bundleId: bundle.id, attempt: bundle.attempt, actor: deps.workerId, leaseSeconds: deps.leaseSeconds },
    lease: deps.lease ?? new LeaseDeadline(deps.leaseSeconds),
    log: deps.logger.child({ bundleId: bundle.id, attempt: bundle.attempt, phase: bundle.phase }),
    started: performance.now(),
  };
  try {
    // A first attempt at booking has no step rows yet; skip the read.
    const steps = bundle.phase === 'book' && bundle.attempt === 1 ? [] : await loadSteps(deps.pool, bundle.id);
    if (bundle.phase === 'undo') return await undo(run, kind.steps, steps);
    return await book(run, kind.steps, steps);
  } catch (err) {
    if (err instanceof Fenced) {
      await logFencedOut(deps.pool, bundle, run.log);
      return 'fenced';
    }
    if (deps.signal?.aborted) return 'aborted';
    const park = parkRequest(err, run.current?.step.provider);
    if (park) {
      if (park.pauseKind) deps.flow?.notePause(park.kind, park.delayMs, park.reason);
      run.log.info({ step: run.current?.step.name, provider: park.kind, delayMs: park.delayMs }, `parked: ${park.reason}`);
      return (await parkBundle(deps.pool, run.fence, run.current!.step.name, park)) ? 'parked' : 'fenced';
    }
    // p-retry rethrows the provider's own error, also when it stopped on a permanent one.
    const error = coerceError(err);
    const errorClass = classify(err);
    const step = run.current?.step.name ?? 'none';
    run.log.warn({ step, errorClass, error: scrubText(error.message) }, err instanceof LeaseExpired ? 'lease deadline reached; stopping' : 'attempt failed');
    const recorded = await recordFailure(deps.pool, run.fence, { step, position: run.current?.position ?? -1, errorClass, message: scrubText(error.message) });
    if (!recorded) await logFencedOut(deps.pool, bundle, run.log);
    return recorded ? 'failed' : 'fenced';
  }
}

function stepContext(run: Run, idempotencyKey: string): StepContext {
  const { bundle, deps } = run;
  return { bundleId: bundle.id, bookingId: bundle.booking_id, payload: bundle.payload, idempotencyKey, providers: deps.providers, signal: deps.signal, exchange: { attempt: bundle.attempt, workerId: deps.workerId } };
}

function describeHolding(held: ProviderHolding): string {
  return held.status === 'booked' ? `provider held booking ${held.reference}` : `provider held ${held.status === 'none' ? 'nothing' : `a ${held.status} key`}`;
}

/**
 * Books a step whose outcome may be unknown. An earlier attempt's intent, or a definitive no that
 * may have answered one of two concurrent requests with the key (a provider's 409 "in progress",
 * a gateway's 404 on a replay), is settled by asking the provider first: a booking it holds is
 * the step's outcome, and no second request is sent.
 */
async function bookStep(run: Run, step: StepDefinition, key: string, unknown: boolean): Promise<string> {
  const ctx = stepContext(run, key);
  if (unknown && step.lookup) {
    const held = await callWithRetry(run, () => step.lookup!(ctx));
    if (held.status === 'booked') return held.reference;
    if (held.status === 'cancelled') throw ProviderError.permanent(`${step.name}: the provider holds key ${key} as cancelled; it will not book it again`);
  }
  // Whether a try with this key may still be at work at the provider: an earlier attempt's (the
  // step was left in `booking`: the request may have gone out before that worker died or was
  // reset, and a provider's work outlasts our timeout), or one of this call's that ended without
  // an answer we can trust (a timeout, a reset, a 5xx) before p-retry sent the next.
  let earlierTryMayRun = unknown;
  try {
    return (await callWithRetry(run, () => step.book(ctx).catch((err: unknown) => {
      if (err instanceof ProviderError && err.transient) earlierTryMayRun = true;
      throw err;
    }))).reference;
  } catch (err) {
    if (!(err instanceof ProviderError) || err.transient || !step.lookup) throw err;
    const held = await callWithRetry(run, () => step.lookup!(ctx)).catch(() => undefined);
    if (held?.status === 'booked') {
      run.log.info({ step: step.name, status: err.status }, 'provider said no, but holds a booking for the key: taking it');
      return held.reference;
    }
    // A no that came while our own earlier try may still be at work there (a provider's 409 "in
    // progress" to a second request with the key, and a provider that books only as it answers
    // shows nothing to a lookup meanwhile) is not believed yet: the attempt fails as transient,
    // and the next one asks the provider first. A definitive no is then definitive.
    // (A provider that keeps refusals, or a lookup that failed too, decides as before.)
    if (earlierTryMayRun && held?.status === 'none') {
      throw ProviderError.transient(`${step.name}: the provider said no (${err.message}) while an earlier try with key ${key} may still be at work there; asking again in the next attempt`, err.status, err);
    }
    throw err;
  }
}

async function book(run: Run, defs: StepDefinition[], rows: StepRow[]): Promise<AgentOutcome> {
  const { bundle, deps, fence } = run;
  const byPosition = new Map(rows.map((r) => [r.position, r]));
  // The last step's outcome is written with the completion, in the same statement.
  let lastStep: FinishRequest['lastStep'];
  // A booked step not yet written: it goes with the next step's intent, in one statement, or
  // alone (flushBooked) before anything else happens. Nothing runs between the two writes, so
  // the recovery point is the same as writing them one after the other.
  let booked: BookedStep | undefined;
  const flushBooked = async () => {
    if (!booked) return;
    const step = booked;
    booked = undefined;
    await fenced(run, () => deps.steps.booked(fence, step));
  };
  for (let position = 0; position < defs.length; position++) {
    const row = byPosition.get(position);
    if (row?.status === 'booked') {
      await flushBooked();
      continue;
    }
    const step = defs[position]!;
    run.current = { step, position };
    let key = row?.idempotency_key ?? stepIdempotencyKey(bundle.id, step.name);
    if (step.wait) {
      await flushBooked();
      const timeout = deps.waitTimeoutSeconds?.[bundle.kind] ?? step.wait.timeoutSeconds;
      const outcome = await enterWait(deps.pool, fence, position, step.name, key, step.wait.signals, timeout);
      if (outcome === 'fenced') throw new Fenced();
      if (outcome === 'waiting') {
        run.log.info({ step: step.name, signals: step.wait.signals }, 'waiting for signals; no worker held');
        return 'waiting';
      }
      run.log.info({ step: step.name }, 'signals already in; going on');
      continue;
    }
    if (step.provider) {
      const sentAt = performance.now();
      const recorded = await deps.steps.intent(fence, position, step.name, key, booked);
      booked = undefined;
      if (!recorded) throw new Fenced();
      run.lease.extendFrom(sentAt);
      key = recorded;
    } else await flushBooked();
    const started = performance.now();
    let reference: string;
    try {
      reference = await stepSpan('book', bundle.id, { name: step.name, position, key }, () => bookStep(run, step, key, row !== undefined));
    } catch (err) {
      deps.onStep?.(step.name, classify(err) === 'permanent' ? 'refused' : 'error', (performance.now() - started) / 1000);
      throw err;
    }
    const stepMs = performance.now() - started;
    deps.onStep?.(step.name, 'booked', stepMs / 1000);
    run.log.info({ step: step.name, reference, ms: Math.round(stepMs) }, `step ${step.name} booked in ${formatDuration(stepMs)}`);
    if (position === defs.length - 1 && !step.localRecord) {
      lastStep = step.provider ? { position, name: step.name, key, reference } : undefined;
    } else {
      booked = { position, name: step.name, key, reference, local: step.localRecord };
    }
  }
  await flushBooked();
  if (!(await deps.finisher.finish({ bundleId: bundle.id, attempt: bundle.attempt, kind: bundle.kind, actor: deps.workerId, outcome: 'completed', lastStep, traceparent: traceparentOf() }))) throw new Fenced();
  const ms = performance.now() - run.started;
  run.log.info({ ms: Math.round(ms) }, `bundle completed in ${formatDuration(ms)}`);
  return 'completed';
}

async function undo(run: Run, defs: StepDefinition[], rows: StepRow[]): Promise<AgentOutcome> {
  const { bundle, deps, fence } = run;
  // Every step that may have reached a provider: its call may have booked even if we never heard
  // back, and a `failed` step's "no" may have answered only one of two requests with its key.
  const toUndo = rows.filter((r) => r.status !== 'cancelled').sort((a, b) => b.position - a.position);
  for (const row of toUndo) {
    const step = defs[row.position];
    if (!step?.cancel) continue;
    run.current = { step, position: row.position };
    await stepSpan('undo', bundle.id, { name: step.name, position: row.position, key: row.idempotency_key }, async () => {
      const ctx = stepContext(run, row.idempotency_key);
      let note: string | undefined;
      let cancel = true;
      if (row.status !== 'booked' && step.lookup) {
        // Outcome unknown: ask first, and say in the timeline what was found.
        const held = await callWithRetry(run, () => step.lookup!(ctx));
        note = describeHolding(held);
        // Nothing there yet: cancel anyway, so a provider that keeps tombstones refuses a late booking.
        cancel = held.status === 'booked' || held.status === 'none';
      }
      if (cancel) {
        await callWithRetry(run, () => step.cancel!(ctx));
        await fenced(run, () => recordCancelled(deps.pool, fence, row.position, step.name, { local: step.localRecord, note }));
        run.log.child({ step: step.name }).info(note ? `step cancelled (${note})` : 'step cancelled');
      } else {
        // Refused or already cancelled at the provider: nothing to undo; the step keeps its status.
        await fenced(run, () => recordNote(deps.pool, fence, step.name, `undo: ${note}; nothing to cancel`));
      }
    });
  }
  // Reconciled once every call that could still be in flight has run out: this worker's settings
  // bound its own attempt's calls; the finish also waits for the call horizon (sql/009), which
  // bounds every earlier attempt's, whatever lease the worker that ran it had.
  const tries = (deps.providerRetries ?? 2) + 1;
  const reconcileAfterSeconds = deps.leaseSeconds + (deps.providers.timeoutMs * tries) / 1000 + 5;
  if (!(await deps.finisher.finish({ bundleId: bundle.id, attempt: bundle.attempt, kind: bundle.kind, actor: deps.workerId, outcome: 'compensated', reconcileAfterSeconds, traceparent: traceparentOf() }))) throw new Fenced();
  const ms = performance.now() - run.started;
  run.log.info({ ms: Math.round(ms) }, `bundle compensated in ${formatDuration(ms)}`);
  return 'compensated';
}
