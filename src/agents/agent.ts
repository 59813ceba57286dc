/**
 * An agent runs one claimed bundle: its next steps in order (phase `book`), or the undo of every
 * step that may have reached a provider, in reverse order (phase `undo`). Before each provider
 * call it records the intent; after it, the outcome. Every write is fenced on the attempt: when
 * one reports that a newer attempt owns the bundle, the agent stops without touching anything.
 * It never decides to retry the bundle or give up: it records the failure and the supervisor decides.
 */
import pRetry, { AbortError } from 'p-retry';
import type pg from 'pg';
import { ProviderError, coerceError } from '../errors.js';
import { bundleKind, stepIdempotencyKey, type StepContext, type StepDefinition } from '../bundles/kinds.js';
import type { ProviderClient } from '../providers/client.js';
import type { ClaimedBundle } from '../scheduler/claim.js';
import { scrubText, type Logger } from '../logger.js';
import { loadSteps, recordCancelled, recordFailure, type Fence, type StepRow } from './fenced-writes.js';
import type { Finisher, FinishRequest } from './finisher.js';
import type { StepWriter } from './step-writer.js';
import { formatDuration, logFencedOut, logRetry } from './agent-log.js';

export interface AgentDeps {
  pool: pg.Pool;
  providers: ProviderClient;
  finisher: Finisher;
  /** Writes step intents and outcomes, batched with other agents' (fenced per row). */
  steps: StepWriter;
  workerId: string;
  leaseSeconds: number;
  /** Retries of a transient provider error within one attempt (p-retry), default 2. */
  providerRetries?: number;
  /** First backoff between those retries, default 100 ms. */
  providerRetryMs?: number;
  logger: Logger;
  signal?: AbortSignal;
  onStep?: (step: string, outcome: string, seconds: number) => void;
}

export type AgentOutcome = 'completed' | 'compensated' | 'failed' | 'fenced' | 'aborted';

class Fenced extends Error {
  constructor() {
    super('a newer attempt owns this bundle');
  }
}

/** Calls a provider with p-retry: transient errors are retried with the same key, permanent ones stop at once. */
function callWithRetry<T>(deps: AgentDeps, fn: () => Promise<T>, onFailedAttempt?: ReturnType<typeof logRetry>): Promise<T> {
  return pRetry(
    async () => {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof ProviderError && !err.transient) throw new AbortError(err);
        throw err;
      }
    },
    {
      retries: deps.providerRetries ?? 2,
      minTimeout: deps.providerRetryMs ?? 100,
      maxTimeout: 1_000,
      factor: 2,
      signal: deps.signal,
      shouldRetry: () => !deps.signal?.aborted,
      onFailedAttempt,
    },
  );
}

function classify(err: unknown): 'transient' | 'permanent' {
  return err instanceof ProviderError && !err.transient ? 'permanent' : 'transient';
}

export async function runAgent(bundle: ClaimedBundle, deps: AgentDeps): Promise<AgentOutcome> {
  const kind = bundleKind(bundle.kind);
  const fence: Fence = { bundleId: bundle.id, attempt: bundle.attempt, actor: deps.workerId, leaseSeconds: deps.leaseSeconds };
  const log = deps.logger.child({ bundleId: bundle.id, attempt: bundle.attempt, phase: bundle.phase });
  // A first attempt at booking has no step rows yet; skip the read.
  const steps = bundle.phase === 'book' && bundle.attempt === 1 ? [] : await loadSteps(deps.pool, bundle.id);
  let current: { step: StepDefinition; position: number } | undefined;
  try {
    if (bundle.phase === 'undo') return await undo(bundle, kind.steps, steps, fence, deps, log, (c) => (current = c));
    return await book(bundle, kind.steps, steps, fence, deps, log, (c) => (current = c));
  } catch (err) {
    if (err instanceof Fenced) {
      await logFencedOut(deps.pool, bundle, log);
      return 'fenced';
    }
    if (deps.signal?.aborted) return 'aborted';
    // p-retry rethrows the provider's own error, also when it stopped on a permanent one.
    const error = coerceError(err);
    const errorClass = classify(err);
    const step = current?.step.name ?? 'none';
    log.warn({ step, errorClass, error: scrubText(error.message) }, 'attempt failed');
    const recorded = await recordFailure(deps.pool, fence, { step, position: current?.position ?? -1, errorClass, message: scrubText(error.message) });
    if (!recorded) await logFencedOut(deps.pool, bundle, log);
    return recorded ? 'failed' : 'fenced';
  }
}

type SetCurrent = (c: { step: StepDefinition; position: number }) => void;

function stepContext(bundle: ClaimedBundle, deps: AgentDeps, idempotencyKey: string): StepContext {
  return { bundleId: bundle.id, bookingId: bundle.booking_id, payload: bundle.payload, idempotencyKey, providers: deps.providers, db: deps.pool, signal: deps.signal };
}

async function book(bundle: ClaimedBundle, defs: StepDefinition[], rows: StepRow[], fence: Fence, deps: AgentDeps, log: Logger, setCurrent: SetCurrent): Promise<AgentOutcome> {
  const bundleStarted = performance.now();
  const booked = new Set(rows.filter((r) => r.status === 'booked').map((r) => r.position));
  // The last step's outcome is written with the completion, in the same statement.
  let lastStep: FinishRequest['lastStep'];
  for (let position = 0; position < defs.length; position++) {
    if (booked.has(position)) continue;
    const step = defs[position]!;
    setCurrent({ step, position });
    let key = rows.find((r) => r.position === position)?.idempotency_key ?? stepIdempotencyKey(bundle.id, step.name);
    if (step.provider) {
      const recorded = await deps.steps.intent(fence, position, step.name, key);
      if (!recorded) throw new Fenced();
      key = recorded;
    }
    const started = performance.now();
    let reference: string;
    try {
      ({ reference } = await callWithRetry(deps, () => step.book(stepContext(bundle, deps, key)), logRetry(log, step.name)));
    } catch (err) {
      deps.onStep?.(step.name, classify(err) === 'permanent' ? 'refused' : 'error', (performance.now() - started) / 1000);
      throw err;
    }
    deps.onStep?.(step.name, 'booked', (performance.now() - started) / 1000);
    const stepMs = performance.now() - started;
    log.info({ step: step.name, reference, ms: Math.round(stepMs) }, `step ${step.name} booked in ${formatDuration(stepMs)}`);
    if (position === defs.length - 1) {
      lastStep = step.provider ? { position, name: step.name, key, reference } : undefined;
    } else if (!(await deps.steps.booked(fence, position, step.name, key, reference))) {
      throw new Fenced();
    }
  }
  if (!(await deps.finisher.finish({ bundleId: bundle.id, attempt: bundle.attempt, kind: bundle.kind, actor: deps.workerId, outcome: 'completed', lastStep }))) throw new Fenced();
  log.info({ ms: Math.round(performance.now() - bundleStarted) }, `bundle completed in ${formatDuration(performance.now() - bundleStarted)}`);
  return 'completed';
}

async function undo(bundle: ClaimedBundle, defs: StepDefinition[], rows: StepRow[], fence: Fence, deps: AgentDeps, log: Logger, setCurrent: SetCurrent): Promise<AgentOutcome> {
  const undoStarted = performance.now();
  // Every step that may have reached a provider: its call may have booked even if we never heard back.
  const toUndo = rows.filter((r) => r.status === 'booking' || r.status === 'booked').sort((a, b) => b.position - a.position);
  for (const row of toUndo) {
    const step = defs[row.position];
    if (!step?.cancel) continue;
    setCurrent({ step, position: row.position });
    await callWithRetry(deps, () => step.cancel!(stepContext(bundle, deps, row.idempotency_key)), logRetry(log, step.name));
    if (!(await recordCancelled(deps.pool, fence, row.position, step.name))) throw new Fenced();
    log.child({ step: step.name }).info('step cancelled');
  }
  if (!(await deps.finisher.finish({ bundleId: bundle.id, attempt: bundle.attempt, kind: bundle.kind, actor: deps.workerId, outcome: 'compensated' }))) throw new Fenced();
  log.info({ ms: Math.round(performance.now() - undoStarted) }, `bundle compensated in ${formatDuration(performance.now() - undoStarted)}`);
  return 'compensated';
}
