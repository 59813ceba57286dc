/**
 * The spans of a bundle's trace, one helper per kind of work, so that the roles wrap a call and
 * every span of one kind has the same name and attributes (the README's "Traces" table):
 *
 *   bundle.attempt / bundle.compensate   a claimed attempt, booking / undoing (parent: the bundle's root)
 *   step <name> / undo <name>            one step booked / undone in an attempt
 *   <METHOD> /<kind>/bookings[/cancel]   one HTTP exchange with a provider (providers/client.ts)
 *   bundle.reconcile                     a reconciliation pass of an undone bundle
 *   supervisor.<orphans|expired|waits|failed>  a supervisor decision about the bundle
 *   supervisor.alert                     an alert raised about the bundle
 *   bundle.signal                        an external confirmation received for the bundle
 *
 * Attributes carry ids, states, steps, attempts and workers — never payload fields (emails,
 * passenger names).
 */
import { context, trace, type Attributes, type Link } from '@opentelemetry/api';
import type { ClaimedBundle, ClaimedReconciliation } from '../scheduler/claim.js';
import { contextFromTraceparent, inSpan, recordSpan, SpanKind } from '../tracing.js';

/** Runs an agent as its attempt's span, parented on the bundle's stored trace context. */
export function attemptSpan<T extends string>(bundle: ClaimedBundle, workerId: string, claimedAtMs: number, run: () => Promise<T>): Promise<T> {
  const attributes: Attributes = {
    'bundlefleet.bundle.id': bundle.id,
    'bundlefleet.booking.id': bundle.booking_id,
    'bundlefleet.bundle.kind': bundle.kind,
    'bundlefleet.attempt': bundle.attempt,
    'bundlefleet.phase': bundle.phase,
    'bundlefleet.from_state': bundle.from_state,
    'bundlefleet.worker.id': workerId,
  };
  const name = bundle.phase === 'undo' ? 'bundle.compensate' : 'bundle.attempt';
  return inSpan(name, { kind: SpanKind.CONSUMER, parent: contextFromTraceparent(bundle.trace_context), attributes, startTime: claimedAtMs }, async (span) => {
    const outcome = await run();
    span.setAttribute('bundlefleet.outcome', outcome);
    return outcome;
  });
}

/** One step of an attempt: `step <name>` when booking, `undo <name>` when compensating. */
export function stepSpan<T>(phase: 'book' | 'undo', bundleId: string, step: { name: string; position: number; key: string }, run: () => Promise<T>): Promise<T> {
  const attributes: Attributes = {
    'bundlefleet.bundle.id': bundleId,
    'bundlefleet.step.name': step.name,
    'bundlefleet.step.position': step.position,
    'bundlefleet.step.idempotency_key': step.key,
  };
  return inSpan(`${phase === 'undo' ? 'undo' : 'step'} ${step.name}`, { attributes }, () => run());
}

/** A reconciliation pass, in the bundle's trace. */
export function reconcileSpan<T extends { done: boolean; cancelled: string[] }>(claim: ClaimedReconciliation, workerId: string, run: () => Promise<T>): Promise<T> {
  const attributes: Attributes = {
    'bundlefleet.bundle.id': claim.id,
    'bundlefleet.booking.id': claim.booking_id,
    'bundlefleet.bundle.kind': claim.kind,
    'bundlefleet.state': claim.state,
    'bundlefleet.reconcile.pass': claim.reconcile_attempts,
    'bundlefleet.worker.id': workerId,
  };
  return inSpan('bundle.reconcile', { kind: SpanKind.CONSUMER, parent: contextFromTraceparent(claim.trace_context), attributes }, async (span) => {
    const outcome = await run();
    span.setAttributes({ 'bundlefleet.reconcile.done': outcome.done, 'bundlefleet.reconcile.cancelled': outcome.cancelled });
    return outcome;
  });
}

export interface DecidedBundle {
  id: string;
  attempt: number;
  from_state: string;
  to_state: string;
  trace_context?: string | null;
}

/** A supervisor decision (one row of a batch UPDATE), recorded in the bundle's trace once it committed. */
export function recordDecision(selection: string, row: DecidedBundle, actor: string, startedAtMs: number): void {
  if (!row.trace_context) return;
  recordSpan(`supervisor.${selection}`, {
    parent: contextFromTraceparent(row.trace_context),
    startTime: startedAtMs,
    attributes: {
      'bundlefleet.bundle.id': row.id,
      'bundlefleet.attempt': row.attempt,
      'bundlefleet.decision': selection,
      'bundlefleet.from_state': row.from_state,
      'bundlefleet.to_state': row.to_state,
      'bundlefleet.supervisor': actor,
    },
  });
}

/** An alert the supervisor raised about a bundle, recorded in the bundle's trace once it committed. */
export function recordAlert(alert: { id: string; bundle_id: string; kind: string; trace_context: string | null }, actor: string, startedAtMs: number): void {
  if (!alert.trace_context) return;
  recordSpan('supervisor.alert', {
    parent: contextFromTraceparent(alert.trace_context),
    startTime: startedAtMs,
    attributes: { 'bundlefleet.bundle.id': alert.bundle_id, 'bundlefleet.alert.id': alert.id, 'bundlefleet.alert.kind': alert.kind, 'bundlefleet.supervisor': actor },
  });
}

/**
 * A signal received for a bundle, recorded in the bundle's trace once it committed, with a link to
 * the span that delivered it (the HTTP request, the CLI command, the queue job) — a trace of its own.
 */
export function recordSignal(result: { vip_bundle_id: string; name: string; stored: boolean; woke: boolean }, traceContext: string | null, startedAtMs: number): void {
  if (!traceContext) return;
  const delivering = trace.getSpan(context.active());
  const links: Link[] = delivering && trace.isSpanContextValid(delivering.spanContext()) ? [{ context: delivering.spanContext() }] : [];
  recordSpan('bundle.signal', {
    kind: SpanKind.CONSUMER,
    parent: contextFromTraceparent(traceContext),
    links,
    startTime: startedAtMs,
    attributes: { 'bundlefleet.bundle.id': result.vip_bundle_id, 'bundlefleet.signal.name': result.name, 'bundlefleet.signal.stored': result.stored, 'bundlefleet.signal.woke': result.woke },
  });
}
