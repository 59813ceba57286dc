/**
 * Traces (issue 11, part 1), with the SDK's in-memory exporter registered in this test process:
 *  - a bundle booked over HTTP, whose first attempt dies with a SIGKILLed worker PROCESS (its spans
 *    die with it), is reset by the supervisor and completed by a second worker: one trace, rooted at
 *    the request, with root → supervisor decision, root → attempt → step → provider call, the
 *    provider receiving each call's traceparent, events carrying it, and `inspect` showing the id;
 *  - a refused bundle: attempt, decision, alert, compensation (undo steps) and reconciliation pass
 *    in the trace of its own enqueue span;
 *  - a signal is a span in the bundle's trace, linked to the request that delivered it;
 *  - a worker process continues the trace stored at enqueue and exports at SIGTERM;
 *  - the sampling decision stored with a bundle holds for its later attempts.
 * The CLI's side (nothing loaded when off, console and OTLP exporters, bad values) is tracing-cli.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type pg from 'pg';
import { context, propagation, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { BIN, cliEnv, otlpCollector, otlpSpans } from './support/otel.js';
import { quietLogger, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { startHttpServer } from '../src/http/server.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { inspectBundle } from '../src/bundles/read.js';
import { runOnce, type PassReport } from '../src/supervisor/supervisor.js';
import { contextFromTraceparent, inSpan, traceIdOf } from '../src/tracing.js';
import type { EventEnvelope } from '../src/bundles/events.js';
import { SOLD_OUT_PREFIX, type ProviderSimulator } from '../src/providers/simulator.js';

const STEPS = ['show_tickets', 'inbound_flight', 'return_flight', 'taxi'];

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
beforeAll(() => provider.register());
afterAll(async () => {
  await provider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
});
beforeEach(() => exporter.reset());

const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const idOf = (s: ReadableSpan) => s.spanContext().spanId;
const attr = (s: ReadableSpan, k: string) => s.attributes[k];

/** Spans of one trace, by trace id. */
function traceSpans(traceId: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
}

/** A proxy in front of the simulator that records the traceparent of every request it forwards. */
async function recordingProxy(sim: ProviderSimulator): Promise<{ url: string; traceparents: string[] }> {
  const traceparents: string[] = [];
  const target = new URL(sim.url);
  const server = http.createServer((req, res) => {
    if (typeof req.headers.traceparent === 'string') traceparents.push(req.headers.traceparent);
    const upstream = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  onCleanup(() => new Promise((r) => server.close(() => r(undefined))));
  server.on('connection', (socket) => onCleanup(async () => socket.destroy()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, traceparents };
}

/** A `bundlefleet worker` process (tracing on, exporting nowhere reachable: its spans are lost when it is killed). */
function spawnWorker(url: string, providersUrl: string, name: string): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: cliEnv(url, {
      PROVIDERS_URL: providersUrl,
      BUNDLEFLEET_WORKER_NAME: name,
      BUNDLEFLEET_POLL_INTERVAL_MS: '100',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9',
    }),
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, exited };
}

async function events(pool: pg.Pool, bundleId: string): Promise<EventEnvelope[]> {
  const { rows } = await pool.query<{ data: EventEnvelope }>(`SELECT data FROM pgboss.job WHERE data->'header'->>'correlation_id' = $1 ORDER BY created_on`, [bundleId]);
  return rows.map((r) => r.data);
}

describe('one trace per bundle', () => {
  it('a bundle booked over HTTP, reset after its worker process was SIGKILLed and completed by a second worker, is one trace: request → attempt → step → provider call', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 1500 });
    const proxy = await recordingProxy(sim);
    const server = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger() });
    onCleanup(() => server.close(0));

    const res = await fetch(`${server.url}/book-vip-bundle`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(vipPayload()) });
    expect(res.status).toBe(201);
    const { vip_bundle_id: id } = (await res.json()) as { vip_bundle_id: string };
    // The four-booking version (v1): this test is about the trace; the ticketing wait of v2 has its own tests.
    await db.pool.query('UPDATE bundles SET kind_version = 1 WHERE id = $1', [id]);
    const root = exporter.getFinishedSpans().find((s) => s.name === 'POST /book-vip-bundle')!;
    expect(root).toBeDefined();
    const traceId = root.spanContext().traceId;

    // First attempt: a worker process, killed mid provider call.
    const victim = spawnWorker(db.url, sim.url, 'victim');
    await waitFor('the victim mid-call', async () => {
      const { rows } = await db.pool.query(`SELECT 1 FROM bundles b JOIN steps s ON s.bundle_id = b.id WHERE b.id = $1 AND b.state = 'running' AND s.status = 'booking'`, [id]);
      return rows.length > 0;
    }, 20_000);
    victim.child.kill('SIGKILL');
    await victim.exited;

    const reports: PassReport[] = [];
    await waitFor('the supervisor to reset the orphan', async () => {
      reports.push(await runOnce(db.pool, { logger: quietLogger(), backoffBaseSeconds: 0.1 }));
      return reports.some((r) => r.orphans === 1);
    }, 10_000);
    startWorker(db.url, sim, { name: 'rescuer', providerUrls: { tickets: proxy.url, flights: proxy.url, taxis: proxy.url }, providerTimeoutMs: 5000 });
    await waitFor('the attempt span of the rescuer', async () => traceSpans(traceId).some((s) => s.name === 'bundle.attempt' && attr(s, 'bundlefleet.outcome') === 'completed'), 40_000);
    expect((await inspectBundle(db.pool, id)).state).toBe('completed');

    const spans = traceSpans(traceId);
    // Every span about this bundle is in the request's trace; the request span is the root.
    expect(exporter.getFinishedSpans().filter((s) => attr(s, 'bundlefleet.bundle.id') === id).every((s) => s.spanContext().traceId === traceId)).toBe(true);
    expect(parentOf(root)).toBeUndefined();
    const enqueue = spans.find((s) => s.name === 'bundle.enqueue')!;
    expect(parentOf(enqueue)).toBe(idOf(root));

    const decision = spans.find((s) => s.name === 'supervisor.orphans')!;
    expect(parentOf(decision)).toBe(idOf(root));
    expect(decision.attributes).toMatchObject({ 'bundlefleet.bundle.id': id, 'bundlefleet.attempt': 1, 'bundlefleet.from_state': 'running', 'bundlefleet.to_state': 'pending' });

    // The victim's attempt 1 spans died with it; attempt 2 is the rescuer's, a child of the root.
    const attempts = spans.filter((s) => s.name === 'bundle.attempt');
    expect(attempts).toHaveLength(1);
    const attempt = attempts[0]!;
    expect(parentOf(attempt)).toBe(idOf(root));
    expect(attempt.attributes).toMatchObject({ 'bundlefleet.attempt': 2, 'bundlefleet.phase': 'book', 'bundlefleet.outcome': 'completed' });
    expect(String(attr(attempt, 'bundlefleet.worker.id'))).toMatch(/^rescuer\./);

    const steps = spans.filter((s) => s.name.startsWith('step '));
    expect(steps.map((s) => s.name)).toEqual(STEPS.map((n) => `step ${n}`));
    for (const step of steps) {
      expect(parentOf(step)).toBe(idOf(attempt));
      const calls = spans.filter((s) => parentOf(s) === idOf(step));
      expect(calls.length, step.name).toBeGreaterThan(0);
      for (const call of calls) {
        expect(call.name).toMatch(/^(GET|POST) \/(tickets|flights|taxis)\/bookings$/);
        expect(attr(call, 'http.response.status_code')).toBeTypeOf('number');
        // The provider got this call's own context.
        expect(proxy.traceparents).toContain(`00-${traceId}-${idOf(call)}-01`);
      }
    }
    // The first step's outcome was unknown (the kill landed mid-call): it was asked about first.
    expect(spans.filter((s) => parentOf(s) === idOf(steps[0]!))[0]!.name).toBe('GET /tickets/bookings');

    // No personal data in any attribute.
    const text = JSON.stringify(spans.map((s) => s.attributes));
    expect(text).not.toMatch(/@example\.com|Passenger/);

    // Events carry the trace context; inspect shows the trace id.
    const evs = await events(db.pool, id);
    expect(evs.map((e) => e.header.event_name)).toEqual(['VipBundleInitialized_v1', 'VipBundleFinalized_v1']);
    expect(evs[0]!.header.traceparent).toBe(`00-${traceId}-${idOf(enqueue)}-01`);
    expect(evs[1]!.header.traceparent).toBe(`00-${traceId}-${idOf(attempt)}-01`);
    expect((await inspectBundle(db.pool, id)).trace_id).toBe(traceId);
  }, 90_000);

  it('a refused bundle: attempt, supervisor decision, alert, compensation (undo steps) and reconciliation pass are one trace, rooted at its enqueue', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    // Bulk enqueue outside any span: each bundle gets a root span of its own.
    const [a, b] = await enqueueBundles(db.pool, [{ payload: { ...vipPayload(), return_flight_id: `${SOLD_OUT_PREFIX}000000000001` } }, { payload: vipPayload() }], { kindVersion: 1 });
    const roots = exporter.getFinishedSpans().filter((s) => s.name === 'bundle.enqueue');
    expect(roots).toHaveLength(2);
    expect(new Set(roots.map((s) => s.spanContext().traceId)).size).toBe(2);
    const root = roots.find((s) => attr(s, 'bundlefleet.bundle.id') === a!.vip_bundle_id)!;
    expect(parentOf(root)).toBeUndefined();
    const traceId = root.spanContext().traceId;

    startWorker(db.url, sim, { name: 'w1' });
    await waitFor('the failed attempt', async () => (await inspectBundle(db.pool, a!.vip_bundle_id)).state === 'failed', 20_000);
    // The pass decides (failed → compensating) and, with stuck-after 0, raises a stuck alert about it.
    await runOnce(db.pool, { logger: quietLogger(), stuckAfterSeconds: 0 });
    await waitFor('compensated', async () => (await inspectBundle(db.pool, a!.vip_bundle_id)).state === 'compensated', 20_000);
    // Its reconciliation pass, due now rather than after the in-flight window.
    await db.pool.query('UPDATE bundles SET reconcile_at = now() WHERE id = $1', [a!.vip_bundle_id]);
    await waitFor('the reconciliation span', async () => traceSpans(traceId).some((s) => s.name === 'bundle.reconcile'), 20_000);
    await waitFor('the other bundle completed', async () => (await inspectBundle(db.pool, b!.vip_bundle_id)).state === 'completed', 20_000);

    const spans = traceSpans(traceId);
    const byName = (n: string) => spans.filter((s) => s.name === n);
    const [attempt] = byName('bundle.attempt');
    expect(attempt!.attributes).toMatchObject({ 'bundlefleet.attempt': 1, 'bundlefleet.outcome': 'failed' });
    expect(parentOf(attempt!)).toBe(idOf(root));
    // The refused step's span failed, with a scrubbed message.
    const refused = byName('step return_flight')[0]!;
    expect(refused.status.code).toBe(2);
    expect(parentOf(refused)).toBe(idOf(attempt!));

    const decision = byName('supervisor.failed')[0]!;
    expect(decision.attributes).toMatchObject({ 'bundlefleet.from_state': 'failed', 'bundlefleet.to_state': 'compensating' });
    expect(parentOf(decision)).toBe(idOf(root));

    const alert = byName('supervisor.alert')[0]!;
    expect(alert.attributes).toMatchObject({ 'bundlefleet.bundle.id': a!.vip_bundle_id, 'bundlefleet.alert.kind': 'stuck' });
    expect(parentOf(alert)).toBe(idOf(root));

    const compensate = byName('bundle.compensate')[0]!;
    expect(compensate.attributes).toMatchObject({ 'bundlefleet.attempt': 2, 'bundlefleet.phase': 'undo', 'bundlefleet.outcome': 'compensated' });
    expect(parentOf(compensate)).toBe(idOf(root));
    const undos = spans.filter((s) => s.name.startsWith('undo '));
    expect(undos.map((s) => s.name)).toEqual(['undo return_flight', 'undo inbound_flight', 'undo show_tickets']);
    for (const u of undos) expect(parentOf(u)).toBe(idOf(compensate));
    const callsOf = (u: ReadableSpan) => spans.filter((s) => parentOf(s) === idOf(u)).map((s) => s.name);
    // The refused step is asked about (the provider holds it as refused: nothing to cancel); booked ones are cancelled.
    expect(callsOf(undos[0]!)).toEqual(['GET /flights/bookings']);
    expect(callsOf(undos[1]!)).toEqual(['POST /flights/bookings/cancel']);
    expect(callsOf(undos[2]!)).toEqual(['POST /tickets/bookings/cancel']);

    const reconcile = byName('bundle.reconcile')[0]!;
    expect(parentOf(reconcile)).toBe(idOf(root));
    expect(reconcile.attributes).toMatchObject({ 'bundlefleet.reconcile.done': true });
    expect(spans.filter((s) => parentOf(s) === idOf(reconcile) && s.name.startsWith('GET ')).length).toBeGreaterThan(0);

    const failedEvent = (await events(db.pool, a!.vip_bundle_id)).find((e) => e.header.event_name === 'VipBundleFailed_v1')!;
    expect(failedEvent.header.traceparent).toBe(`00-${traceId}-${idOf(compensate)}-01`);
    // The other bundle is a trace of its own.
    expect(spans.some((s) => attr(s, 'bundlefleet.bundle.id') === b!.vip_bundle_id)).toBe(false);
  }, 60_000);
});

describe('signals', () => {
  it('a signal delivered over HTTP is a span in the bundle\'s trace, linked to the request that brought it', async () => {
    const db = await createTestDb();
    const server = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger() });
    onCleanup(() => server.close(0));
    // vip v2 waits for the ticketing confirmations.
    const [bundle] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 2 });
    const root = exporter.getFinishedSpans().find((s) => s.name === 'bundle.enqueue')!;
    const res = await fetch(`${server.url}/bundles/${bundle!.vip_bundle_id}/signals/inbound_ticketed`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(201);
    await waitFor('the request span', async () => exporter.getFinishedSpans().some((s) => s.name === 'POST /bundles/:id/signals/:name'));
    const request = exporter.getFinishedSpans().find((s) => s.name === 'POST /bundles/:id/signals/:name')!;
    const signal = exporter.getFinishedSpans().find((s) => s.name === 'bundle.signal')!;
    expect(signal.spanContext().traceId).toBe(root.spanContext().traceId);
    expect(parentOf(signal)).toBe(idOf(root));
    expect(signal.attributes).toMatchObject({ 'bundlefleet.signal.name': 'inbound_ticketed', 'bundlefleet.signal.stored': true, 'bundlefleet.signal.woke': false });
    expect(signal.links.map((l) => l.context.spanId)).toEqual([idOf(request)]);
    expect(request.spanContext().traceId).not.toBe(root.spanContext().traceId);
  });
});

describe('a worker process', () => {
  it('continues the trace stored at enqueue, and exports its spans when SIGTERM stops it', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const { endpoint, received } = await otlpCollector();
    const [bundle] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    const root = exporter.getFinishedSpans().find((s) => s.name === 'bundle.enqueue')!;
    // A long batch delay: only the flush at shutdown exports the worker's spans.
    const worker = spawn(process.execPath, [BIN, 'worker'], {
      env: cliEnv(db.url, { PROVIDERS_URL: sim.url, BUNDLEFLEET_POLL_INTERVAL_MS: '100', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '600000' }),
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    onCleanup(async () => {
      if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
      await exited;
    });
    await waitFor('completed', async () => (await inspectBundle(db.pool, bundle!.vip_bundle_id)).state === 'completed', 20_000);
    expect(received).toHaveLength(0);
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);

    const spans = otlpSpans(received.map((r) => r.body));
    const attempt = spans.find((s) => s.name === 'bundle.attempt')!;
    expect(attempt.traceId).toBe(root.spanContext().traceId);
    expect(attempt.parentSpanId).toBe(idOf(root));
    expect(spans.filter((s) => s.name.startsWith('step ')).every((s) => s.parentSpanId === attempt.spanId && s.traceId === attempt.traceId)).toBe(true);
    expect(spans.filter((s) => s.name.startsWith('step '))).toHaveLength(4);
  });
});

describe('sampling', () => {
  it('keeps the sampling decision stored with a bundle: a later attempt of an unsampled bundle records nothing', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const recording = (stored: string) => inSpan('bundle.attempt', { parent: contextFromTraceparent(stored) }, async (span) => span.isRecording());
    expect(await recording(`00-${traceId}-00f067aa0ba902b7-01`)).toBe(true);
    expect(await recording(`00-${traceId}-00f067aa0ba902b7-00`)).toBe(false);
    expect(traceIdOf(`00-${traceId}-00f067aa0ba902b7-00`)).toBe(traceId);
    expect(traceIdOf('garbage')).toBeNull();
  });
});
