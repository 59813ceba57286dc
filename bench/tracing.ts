/**
 * What tracing costs (issue 11): scenario 5a's workload (four-step VIP bundles, provider latency
 * 0, the same concurrency) with tracing off and on, interleaved in one run on fresh databases.
 * "On" is the product's own start-up (src/tracing.ts startTracing, as OTEL_EXPORTER_OTLP_ENDPOINT
 * makes the CLI do it): the SDK, the batch span processor and the OTLP http/protobuf exporter,
 * posting to a local sink in this process that reads each request and discards it.
 */
import http from 'node:http';
import * as bf from './systems/bundlefleet.js';
import type { BenchServer } from './lib/server.js';
import { startSimulator } from './lib/procs.js';
import { log, median } from './lib/util.js';
import type { Config, ScenarioResult } from './scenarios.js';
import { startTracing, stopTracing } from '../src/tracing.js';

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** An OTLP/HTTP receiver that discards what it gets, counting requests and bytes. */
async function startSink(): Promise<{ url: string; requests: () => number; bytes: () => number; close: () => Promise<void> }> {
  let requests = 0;
  let bytes = 0;
  const server = http.createServer((req, res) => {
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => requests,
    bytes: () => bytes,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** Starts the product's tracing, exporting to `endpoint`; the OTEL_* variables it set are removed again at stop. */
async function tracingOn(endpoint: string): Promise<() => Promise<void>> {
  const saved = { endpoint: process.env.OTEL_EXPORTER_OTLP_ENDPOINT, name: process.env.OTEL_SERVICE_NAME };
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
  process.env.OTEL_SERVICE_NAME = 'bundlefleet-bench';
  await startTracing(process.env);
  return async () => {
    await stopTracing();
    if (saved.endpoint === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = saved.endpoint;
    if (saved.name === undefined) delete process.env.OTEL_SERVICE_NAME;
    else process.env.OTEL_SERVICE_NAME = saved.name;
  };
}

export async function scenario5Tracing(server: BenchServer, cfg: Config): Promise<ScenarioResult> {
  const sim = await startSimulator(0);
  const sink = await startSink();
  const rates: Record<'off' | 'on', number[]> = { off: [], on: [] };
  // CPU of this process (worker, its spans, the sink) per bundle: less disturbed by other load on the machine than the rate.
  const cpuUs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const N = cfg.vipBundles;
  try {
    for (let rep = 1; rep <= cfg.vipReps; rep++) {
      // Alternate which goes first, so that drift over the run falls on both alike.
      for (const mode of rep % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const url = await server.createDatabase(`vip_otel_${mode}`);
        const pool = await bf.setup(url);
        const stop = mode === 'on' ? await tracingOn(sink.url) : undefined;
        try {
          await bf.enqueue(pool, bf.vipItems(N), 'vip', 1000);
          await pool.query('ANALYZE');
          const urls = { tickets: sim.url, flights: sim.url, taxis: sim.url };
          const cpu0 = process.cpuUsage();
          const { seconds, outcomes } = await bf.processAll(pool, url, N, { concurrency: cfg.vipConcurrencyZero, providerUrls: urls });
          const cpu = process.cpuUsage(cpu0);
          cpuUs[mode].push((cpu.user + cpu.system) / N);
          if ((outcomes.completed ?? 0) !== N) throw new Error(`5a tracing ${mode}: outcomes ${JSON.stringify(outcomes)}`);
          rates[mode].push(N / seconds);
          log(`5a tracing ${mode} rep ${rep}: ${fmt(N / seconds)} bundles/s, ${fmt(cpuUs[mode].at(-1)!)} µs CPU per bundle in this process`);
        } finally {
          await stop?.();
          await pool.end();
          await server.dropDatabase(url);
        }
      }
    }
  } finally {
    await sink.close();
    await sim.child.kill();
  }
  const off = median(rates.off);
  const on = median(rates.on);
  const cpuOff = median(cpuUs.off);
  const cpuOn = median(cpuUs.on);
  return {
    id: '5a-otel',
    name: `5a with tracing on (OTLP http/protobuf to a local sink that discards) vs off, same run (${fmt(N)} bundles, concurrency ${cfg.vipConcurrencyZero}, median of ${cfg.vipReps})`,
    unit: 'bundles/s',
    better: 'higher',
    bundlefleet: {
      value: on,
      text: `${fmt(on)}/s on, ${fmt(off)}/s off; CPU ${fmt(cpuOn)} µs vs ${fmt(cpuOff)} µs per bundle (×${fmt(cpuOn / cpuOff, 2)})`,
      source: 'measured',
      detail: { on: rates.on, off: rates.off, cpu_us_per_bundle_on: cpuUs.on, cpu_us_per_bundle_off: cpuUs.off, sink_requests: sink.requests(), sink_bytes: sink.bytes() },
    },
    pgboss: null,
    graphile: null,
    ratio: on / off,
    ratioNote: '× the rate with tracing off',
    target: '— (reported)',
    targetValue: null,
    met: null,
    settings: {
      tracing: 'startTracing() with OTEL_EXPORTER_OTLP_ENDPOINT=<local sink>: NodeTracerProvider, BatchSpanProcessor (OTEL_BSP_* defaults), OTLP http/protobuf exporter; about 10 spans per bundle (enqueue, attempt, 4 steps, 4 provider calls)',
      worker: `in-process Worker, concurrency ${cfg.vipConcurrencyZero}, simulator latency 0 ms (separate process)`,
    },
    bars: [
      { label: 'bundlefleet, tracing off', value: off, system: 'bundlefleet' },
      { label: 'bundlefleet, tracing on', value: on, system: 'bundlefleet' },
    ],
  };
}
