/**
 * Traces (OpenTelemetry), one trace per bundle. Every role uses only `@opentelemetry/api` through
 * the helpers here: without a registered SDK each of them is the API's no-op (a non-recording span,
 * no context manager, no propagator). The SDK and its exporter are imported (dynamically, by
 * startTracing) only when the standard variables ask for traces — OTEL_TRACES_EXPORTER, or an
 * OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) — so a fleet
 * without tracing loads none of it.
 *
 * A bundle's trace outlives any process: the W3C traceparent of its root span is stored with the
 * bundle (`bundles.trace_context`, written at enqueue, read at every claim), and each attempt,
 * step, provider call, compensation, reconciliation pass and supervisor decision is a span in it.
 * Attributes name bundles, steps, attempts and workers; never emails or passenger names.
 */
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Context,
  type Link,
  type Span,
} from '@opentelemetry/api';
import { BadInput } from './errors.js';
import { scrubText } from './logger.js';

export { SpanKind };

const TRACER_NAME = 'bundlefleet';
const TRACER_VERSION = '0.1.0';

/** Asked for each time: tests (and a late startTracing) may register a provider after this module loaded. */
function tracer() {
  return trace.getTracer(TRACER_NAME, TRACER_VERSION);
}

export interface SpanOptions {
  attributes?: Attributes;
  kind?: SpanKind;
  /** Parent context; default the active one. */
  parent?: Context;
  links?: Link[];
  /** Epoch milliseconds, when the work began before the span could be opened. */
  startTime?: number;
}

/** Records a failure on a span: its type and a scrubbed message (no stack, no personal data). */
export function recordFailure(span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  const message = scrubText(e.message).slice(0, 500);
  span.recordException({ name: e.name, message });
  span.setAttribute('error.type', e.name);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
}

/**
 * Runs `fn` inside a new span (the active span for everything it awaits) and ends the span when
 * `fn` settles; a rejection is recorded on the span and rethrown.
 */
export function inSpan<T>(name: string, opts: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T> {
  const parent = opts.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: opts.kind, attributes: opts.attributes, links: opts.links, startTime: opts.startTime }, parent);
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await fn(span);
    } catch (err) {
      recordFailure(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Starts a span that the caller ends (for work that is not one function call). */
function startSpan(name: string, opts: SpanOptions = {}): Span {
  return tracer().startSpan(name, { kind: opts.kind, attributes: opts.attributes, links: opts.links, startTime: opts.startTime }, opts.parent ?? context.active());
}

/** A span for something that already happened (a supervisor decision): started at `startTime`, ended now. */
export function recordSpan(name: string, opts: SpanOptions): void {
  startSpan(name, opts).end();
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The W3C traceparent of a span (or of the active span), or null when there is none or it is the
 * API's no-op: what is stored in bundles.trace_context and put in event headers. Formatted here,
 * not by the registered propagator, so it never depends on OTEL_PROPAGATORS.
 */
export function traceparentOf(spanOrContext?: Span | Context): string | null {
  const span = spanOrContext === undefined ? trace.getSpan(context.active()) : 'spanContext' in spanOrContext ? spanOrContext : trace.getSpan(spanOrContext);
  const sc = span?.spanContext();
  if (!sc || !trace.isSpanContextValid(sc)) return null;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The context to parent a bundle's spans on, from its stored traceparent; the root context when there is none. */
export function contextFromTraceparent(stored: string | null | undefined): Context {
  const m = stored ? TRACEPARENT.exec(stored) : null;
  if (!m) return ROOT_CONTEXT;
  const spanContext = { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16) & TraceFlags.SAMPLED, isRemote: true };
  return trace.isSpanContextValid(spanContext) ? trace.setSpanContext(ROOT_CONTEXT, spanContext) : ROOT_CONTEXT;
}

/** The trace id in a stored traceparent (what `inspect` prints), or null. */
export function traceIdOf(stored: string | null | undefined): string | null {
  const m = stored ? TRACEPARENT.exec(stored) : null;
  return m ? m[1]! : null;
}

/** Adds the active context's propagation headers (`traceparent`, `tracestate`) to outgoing request headers; nothing when tracing is off. */
export function injectHeaders(headers: Record<string, string>): Record<string, string> {
  propagation.inject(context.active(), headers);
  return headers;
}

/** The context an incoming request carries (its `traceparent`), for a server span's parent; the active context when tracing is off. */
export function extractHeaders(headers: Record<string, string | string[] | undefined>): Context {
  return propagation.extract(context.active(), headers);
}

/**
 * One root span per bundle being enqueued. A single bundle enqueued inside a span (the HTTP
 * request, the CLI command) joins that span's trace, and that span is the bundle's root; bundles
 * enqueued in bulk or outside any span each get a root span of their own, linked to the enqueuing
 * span, so every bundle is one trace. Returns the traceparents to store (null without tracing),
 * and `end` to close the spans after the insert.
 */
export function startEnqueueSpans(ids: string[], bookingIds: string[], kind: string): { traceparents: Array<string | null> | null; eventTraceparentOverride: string | null; end: () => void } {
  const active = trace.getSpan(context.active());
  const joinActive = ids.length === 1 && active !== undefined && traceparentOf(active) !== null;
  const links: Link[] = active && !joinActive && traceparentOf(active) ? [{ context: active.spanContext() }] : [];
  const spans = ids.map((id, i) =>
    startSpan('bundle.enqueue', {
      kind: SpanKind.PRODUCER,
      parent: joinActive ? context.active() : ROOT_CONTEXT,
      links,
      attributes: { 'bundlefleet.bundle.id': id, 'bundlefleet.booking.id': bookingIds[i]!, 'bundlefleet.bundle.kind': kind },
    }),
  );
  const own = spans.map((s) => traceparentOf(s));
  const traceparents = joinActive ? [traceparentOf(active)] : own;
  const on = traceparents.some((t) => t !== null);
  return {
    // Without tracing every entry is null: pass null, so the insert takes no extra array.
    traceparents: on ? traceparents : null,
    // An event carries its bundle's enqueue span. That is the bundle's own trace context, except
    // when its one bundle joined the caller's trace: then the event names the enqueue span here.
    eventTraceparentOverride: joinActive ? own[0]! : null,
    end() {
      for (const s of spans) s.end();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Starting the SDK, only when asked for.

export type TracesExporter = 'otlp' | 'console';

export interface TracingSettings {
  exporters: TracesExporter[];
  /** OTLP protocol (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL); default http/protobuf. */
  protocol: 'http/protobuf' | 'http/json';
}

const isTrue = (v: string | undefined) => v?.trim().toLowerCase() === 'true';

/**
 * Reads the OpenTelemetry environment: null when traces are not asked for (no exporter named and
 * no OTLP endpoint, OTEL_TRACES_EXPORTER=none, or OTEL_SDK_DISABLED=true). Throws BadInput naming
 * the variable for a value bundlefleet cannot honour.
 */
export function tracingSettingsFromEnv(env: NodeJS.ProcessEnv): TracingSettings | null {
  if (isTrue(env.OTEL_SDK_DISABLED)) return null;
  const named = env.OTEL_TRACES_EXPORTER?.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean) ?? [];
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (!named.length && !endpoint) return null;
  if (named.includes('none')) return null;
  const exporters = named.length ? named : ['otlp'];
  for (const e of exporters) {
    if (e !== 'otlp' && e !== 'console') throw new BadInput(`OTEL_TRACES_EXPORTER: ${JSON.stringify(e)} is not supported; use otlp, console or none`);
  }
  const protocolVar = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?.trim() ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL' : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const protocol = env[protocolVar]?.trim() || 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') {
    throw new BadInput(`${protocolVar}: ${JSON.stringify(protocol)} is not supported; use http/protobuf (the default) or http/json`);
  }
  return { exporters: [...new Set(exporters)] as TracesExporter[], protocol };
}

export interface TracingHandle {
  /** Exports what is buffered (one-shot commands call it before they exit). */
  flush(): Promise<void>;
  /** Flushes and stops the SDK. */
  shutdown(): Promise<void>;
}

let started: TracingHandle | undefined;

/**
 * Starts the SDK when the environment asks for traces (see tracingSettingsFromEnv); otherwise
 * loads nothing and returns undefined. Idempotent.
 */
export async function startTracing(env: NodeJS.ProcessEnv = process.env): Promise<TracingHandle | undefined> {
  if (started) return started;
  const settings = tracingSettingsFromEnv(env);
  if (!settings) return undefined;
  const sdk = await import('./tracing-sdk.js');
  started = sdk.startTracingSdk(settings);
  return started;
}

/** Flushes buffered spans, if tracing was started; never throws (an exporter that is down must not fail a command). */
export async function flushTracing(): Promise<void> {
  await started?.flush().catch(() => {});
}

/** Flushes and stops the SDK, if it was started, and unregisters it (a later startTracing starts afresh); never throws. */
export async function stopTracing(): Promise<void> {
  const handle = started;
  if (!handle) return;
  started = undefined;
  await handle.shutdown().catch(() => {});
  trace.disable();
  context.disable();
  propagation.disable();
}
