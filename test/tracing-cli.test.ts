/**
 * Traces from the CLI (issue 11, part 1): with OTEL_* unset no SDK module is loaded and no trace is
 * stored; with OTEL_TRACES_EXPORTER=console the spans go to stderr while `--json` keeps stdout one
 * document; over OTLP a one-shot command exports before it exits; bad OTEL values exit 2.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { cli, otlpCollector } from './support/otel.js';
import { inspectBundle } from '../src/bundles/read.js';
import { tracingSettingsFromEnv } from '../src/tracing.js';
import { exampleId } from '../src/providers/simulator.js';

const HOOK = fileURLToPath(new URL('./support/loaded-modules.mjs', import.meta.url));
const ENQUEUE_FLAGS = ['enqueue', '--customer-email', 'ada@example.com', '--show-id', exampleId(1, 1), '--tickets', '1', '--passenger', 'Ada L', '--inbound-flight-id', exampleId(2, 1), '--return-flight-id', exampleId(3, 1), '--json'];

describe('tracing off and on in the CLI', () => {
  async function loadedModules(url: string, args: string[], env: NodeJS.ProcessEnv) {
    const dir = await mkdtemp(join(tmpdir(), 'bundlefleet-otel-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'modules.txt');
    const run = await cli(url, args, { ...env, LOADED_MODULES_FILE: file }, ['--import', HOOK]);
    return { ...run, modules: (await readFile(file, 'utf8')).split('\n') };
  }
  const sdkModules = (modules: string[]) => modules.filter((m) => /@opentelemetry\/(sdk-|exporter-|resources|otlp-)/.test(m));

  it('with OTEL_* unset loads no SDK module and stores no trace; with OTEL_TRACES_EXPORTER=console spans go to stderr and inspect prints the trace id', async () => {
    const db = await createTestDb();

    const off = await loadedModules(db.url, ENQUEUE_FLAGS, {});
    expect(off.code, off.stderr).toBe(0);
    const offId = (JSON.parse(off.stdout) as { vip_bundle_id: string }).vip_bundle_id;
    // The API is loaded (so the hook sees the packages), the SDK is not.
    expect(off.modules.some((m) => m.includes('@opentelemetry/api'))).toBe(true);
    expect(sdkModules(off.modules)).toEqual([]);
    expect((await inspectBundle(db.pool, offId)).trace_id).toBeNull();
    const offInspect = await cli(db.url, ['inspect', offId]);
    expect(offInspect.stdout).not.toMatch(/^trace /m);

    const on = await loadedModules(db.url, ENQUEUE_FLAGS, { OTEL_TRACES_EXPORTER: 'console', OTEL_SERVICE_NAME: 'bf-test' });
    expect(on.code, on.stderr).toBe(0);
    expect(sdkModules(on.modules).some((m) => m.includes('@opentelemetry/sdk-trace-base'))).toBe(true);
    // stdout stays one JSON document; the spans are JSON lines on stderr.
    const onId = (JSON.parse(on.stdout) as { vip_bundle_id: string }).vip_bundle_id;
    const spans = on.stderr.split('\n').filter((l) => l.startsWith('{"trace_id"')).map((l) => JSON.parse(l) as { trace_id: string; span_id: string; parent_span_id?: string; name: string; attributes: Record<string, unknown> });
    const command = spans.find((s) => s.name === 'bundlefleet enqueue')!;
    const enqueue = spans.find((s) => s.name === 'bundle.enqueue')!;
    expect(command.parent_span_id).toBeUndefined();
    expect(enqueue.parent_span_id).toBe(command.span_id);
    expect(enqueue.attributes['bundlefleet.bundle.id']).toBe(onId);
    expect(on.stderr).not.toContain('ada@example.com');

    const inspect = await cli(db.url, ['inspect', onId]);
    expect(inspect.stdout).toContain(`trace ${command.trace_id}\n`);
    const json = await cli(db.url, ['inspect', onId, '--json']);
    expect(JSON.parse(json.stdout).trace_id).toBe(command.trace_id);
  }, 60_000);

  it('exports over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT before a one-shot command exits (http/json and the default http/protobuf), named by OTEL_SERVICE_NAME', async () => {
    const db = await createTestDb();
    const { endpoint, received } = await otlpCollector();

    const json = await cli(db.url, ENQUEUE_FLAGS, { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_SERVICE_NAME: 'bf-cli' });
    expect(json.code, json.stderr).toBe(0);
    const id = (JSON.parse(json.stdout) as { vip_bundle_id: string }).vip_bundle_id;
    expect(received).toHaveLength(1);
    expect(received[0]!.path).toBe('/v1/traces');
    const body = JSON.parse(received[0]!.body.toString()) as { resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }; scopeSpans: Array<{ spans: Array<{ name: string; traceId: string }> }> }> };
    const rs = body.resourceSpans[0]!;
    expect(rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue).toBe('bf-cli');
    const names = rs.scopeSpans.flatMap((ss) => ss.spans.map((sp) => sp.name));
    expect(names.sort()).toEqual(['bundle.enqueue', 'bundlefleet enqueue']);
    expect((await inspectBundle(db.pool, id)).trace_id).toBe(rs.scopeSpans[0]!.spans[0]!.traceId);
    expect(received[0]!.body.toString()).not.toContain('ada@example.com');

    const proto = await cli(db.url, ENQUEUE_FLAGS, { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
    expect(proto.code, proto.stderr).toBe(0);
    expect(received).toHaveLength(2);
    expect(received[1]!.path).toBe('/v1/traces');
    expect(received[1]!.type).toBe('application/x-protobuf');
  });

  it('refuses OTEL values it cannot honour with exit 2 naming the variable', async () => {
    const db = await createTestDb();
    const exporterRun = await cli(db.url, ['stats'], { OTEL_TRACES_EXPORTER: 'zipkin' });
    expect(exporterRun.code).toBe(2);
    expect(exporterRun.stderr).toContain('OTEL_TRACES_EXPORTER');
    const protocolRun = await cli(db.url, ['stats'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' });
    expect(protocolRun.code).toBe(2);
    expect(protocolRun.stderr).toContain('OTEL_EXPORTER_OTLP_PROTOCOL');
  });

  it('reads the OpenTelemetry environment: traces only when an exporter or an OTLP endpoint is named', () => {
    expect(tracingSettingsFromEnv({})).toBeNull();
    expect(tracingSettingsFromEnv({ OTEL_SERVICE_NAME: 'x' })).toBeNull();
    expect(tracingSettingsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toEqual({ exporters: ['otlp'], protocol: 'http/protobuf' });
    expect(tracingSettingsFromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })).toEqual({ exporters: ['otlp'], protocol: 'http/json' });
    expect(tracingSettingsFromEnv({ OTEL_TRACES_EXPORTER: 'console,otlp' })).toEqual({ exporters: ['console', 'otlp'], protocol: 'http/protobuf' });
    expect(tracingSettingsFromEnv({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toBeNull();
    expect(tracingSettingsFromEnv({ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' })).toBeNull();
  });
});
