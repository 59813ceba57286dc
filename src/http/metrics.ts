/**
 * Prometheus metrics (prom-client). Two kinds live in one registry:
 *
 * - per-process counters and a histogram, fed by hooks that a Worker (claims, steps, outcomes)
 *   or a supervisor (actions) calls: each process exposes its own, and Prometheus sums them;
 * - fleet-wide gauges (bundles by state, open alerts, age of the oldest due bundle) read from
 *   PostgreSQL at scrape time with fleetStats(). Only a process that called collectFromDb(pool)
 *   has them — `serve` does, workers do not — so the fleet is not counted once per worker, and a
 *   worker's /metrics does not list gauges it would never fill.
 *
 * Label sets stay small and bounded: state, step, outcome, action. Never a bundle id.
 *
 * The output passes `promtool check metrics` (test/metrics-lint.test.ts applies its rules):
 * prom-client's default `nodejs_active_{handles,requests,resources}_total` are gauges whose names
 * end in `_total`, which promtool reserves for counters, so they are dropped; their per-type
 * gauges `nodejs_active_handles{type}` etc. stay, and `sum()` of those gives the same number.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import { BUNDLE_STATES, fleetStats, type FleetStats } from '../bundles/read.js';
import type { Queryable } from '../db/pool.js';
import { rootLogger, type Logger } from '../logger.js';

export interface MetricsHooks {
  /** A scheduler claimed `count` bundles in one statement. */
  onClaim(count: number): void;
  /** One step's provider call ended: `booked`, `refused` (a definitive no) or `error` (transient). */
  onStep(step: string, outcome: string, seconds: number): void;
  /** An agent finished its run of a bundle: completed, compensated, failed, fenced or aborted. */
  onOutcome(outcome: string): void;
  /** A supervisor pass took `count` actions of one kind (reset, compensate, dead, alert, prune...). */
  onSupervisorAction(kind: string, count: number): void;
}

export interface Metrics {
  registry: client.Registry;
  hooks: MetricsHooks;
  /** Fills the fleet-wide gauges from this database at every scrape. */
  collectFromDb(pool: Queryable): void;
}

export interface MetricsOptions {
  /** Node's default metrics (event loop lag, heap, GC, fds...). Default true. */
  defaultMetrics?: boolean;
  logger?: Logger;
}

/**
 * Step latencies are provider round trips, retries included: from a few milliseconds against the
 * simulator to the provider timeout (5 s by default) times the in-attempt retries.
 */
const STEP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Several gauges read the same stats in one scrape: share one query round within this window. */
const STATS_REUSE_MS = 1_000;

/** prom-client defaults that promtool's lint refuses (a gauge named like a counter). */
const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new client.Registry();
  if (opts.defaultMetrics !== false) {
    client.collectDefaultMetrics({ register: registry });
    for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);
  }
  const log = (opts.logger ?? rootLogger()).child({ component: 'metrics' });

  let pool: Queryable | undefined;
  let cached: { at: number; stats: Promise<FleetStats | undefined> } | undefined;
  /** One fleetStats() per scrape; undefined when the database did not answer (logged once per scrape). */
  function stats(): Promise<FleetStats | undefined> {
    if (!pool) return Promise.resolve(undefined);
    if (cached && Date.now() - cached.at < STATS_REUSE_MS) return cached.stats;
    const db = pool;
    const promise = fleetStats(db).catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, 'metrics: could not read fleet stats');
      return undefined;
    });
    cached = { at: Date.now(), stats: promise };
    return promise;
  }

  const claims = new client.Counter({ name: 'bundlefleet_claims_total', help: 'Bundles claimed by this process', registers: [registry] });
  const stepOutcomes = new client.Counter({
    name: 'bundlefleet_step_outcomes_total',
    help: 'Provider calls of a step by outcome (booked, refused, error), in this process',
    labelNames: ['step', 'outcome'] as const,
    registers: [registry],
  });
  const stepDuration = new client.Histogram({
    name: 'bundlefleet_step_duration_seconds',
    help: 'Duration of one step (provider call with its in-attempt retries), in this process',
    labelNames: ['step'] as const,
    buckets: STEP_BUCKETS,
    registers: [registry],
  });
  const bundleOutcomes = new client.Counter({
    name: 'bundlefleet_bundle_outcomes_total',
    help: 'Agent runs by outcome (completed, compensated, failed, fenced, aborted), in this process',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const supervisorActions = new client.Counter({
    name: 'bundlefleet_supervisor_actions_total',
    help: 'Supervisor actions by kind, in this process',
    labelNames: ['action'] as const,
    registers: [registry],
  });

  /** The fleet-wide gauges, registered once, by the first collectFromDb(). */
  function registerFleetGauges(): void {
    new client.Gauge({
      name: 'bundlefleet_bundles',
      help: 'Bundles by state, fleet-wide (read from PostgreSQL at scrape time)',
      labelNames: ['state'] as const,
      registers: [registry],
      async collect() {
        const s = await stats();
        this.reset();
        if (s) for (const state of BUNDLE_STATES) this.set({ state }, s.by_state[state]);
      },
    });
    new client.Gauge({
      name: 'bundlefleet_open_alerts',
      help: 'Unresolved, unacknowledged alerts, fleet-wide',
      registers: [registry],
      async collect() {
        const s = await stats();
        this.reset();
        if (s) this.set(s.open_alerts);
      },
    });
    new client.Gauge({
      name: 'bundlefleet_oldest_due_pending_age_seconds',
      help: 'How long the oldest due pending or compensating bundle has waited for a claim (0 when none)',
      registers: [registry],
      async collect() {
        const s = await stats();
        this.reset();
        if (s) this.set(s.oldest_due_pending_age_seconds ?? 0);
      },
    });
    // Flow control per provider kind (issue 13): limits as the workers published them, slots in use, pauses, parked bundles.
    const providerGauge = (name: string, help: string, value: (p: FleetStats['providers'][number]) => number | null) =>
      new client.Gauge({
        name,
        help,
        labelNames: ['provider'] as const,
        registers: [registry],
        async collect() {
          const s = await stats();
          this.reset();
          for (const p of s?.providers ?? []) {
            const v = value(p);
            if (v !== null) this.set({ provider: p.kind }, v);
          }
        },
      });
    providerGauge('bundlefleet_provider_max_in_flight', 'Fleet-wide limit on calls in flight per provider kind (absent: unlimited)', (p) => p.max_in_flight);
    providerGauge('bundlefleet_provider_rate_limit_per_second', 'Fleet-wide limit on calls per second per provider kind (absent: unlimited)', (p) => p.rate_per_second);
    providerGauge('bundlefleet_provider_in_flight', 'In-flight slots leased now per limited provider kind, fleet-wide', (p) => (p.max_in_flight ? p.in_flight : null));
    providerGauge('bundlefleet_provider_paused', '1 while a provider kind is paused fleet-wide (Retry-After or an open circuit)', (p) => (p.paused_until ? 1 : 0));
    providerGauge('bundlefleet_parked_bundles', 'Bundles parked waiting for a provider window, per provider kind', (p) => p.parked_bundles);
    new client.Gauge({
      name: 'bundlefleet_database_up',
      help: '1 when the fleet stats query answered at the last scrape, 0 when it failed',
      registers: [registry],
      async collect() {
        this.set((await stats()) ? 1 : 0);
      },
    });
  }

  return {
    registry,
    hooks: {
      onClaim: (count) => claims.inc(count),
      onStep: (step, outcome, seconds) => {
        stepOutcomes.inc({ step, outcome });
        stepDuration.observe({ step }, seconds);
      },
      onOutcome: (outcome) => bundleOutcomes.inc({ outcome }),
      onSupervisorAction: (kind, count) => {
        if (count > 0) supervisorActions.inc({ action: kind }, count);
      },
    },
    collectFromDb(db) {
      if (!pool) registerFleetGauges();
      pool = db;
      cached = undefined;
    },
  };
}

export interface MetricsServer {
  server: http.Server;
  url: string;
  close(): Promise<void>;
}

/** Writes the registry in Prometheus text format; a failing collector gives 500, never a crash. */
export async function sendMetrics(registry: client.Registry, res: http.ServerResponse, log?: Logger): Promise<void> {
  try {
    const body = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' }).end(body);
  } catch (err) {
    log?.error({ err: (err as Error).message }, 'metrics: scrape failed');
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
  }
}

/**
 * A tiny server for one process's own metrics (`worker --metrics-port P`): GET /metrics only.
 * Loopback by default; port 0 picks a free one.
 */
export async function startMetricsServer(port: number, registry: client.Registry, host = '127.0.0.1', logger?: Logger): Promise<MetricsServer> {
  const log = (logger ?? rootLogger()).child({ component: 'metrics' });
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET', 'content-type': 'text/plain' }).end('method not allowed\n');
    void sendMetrics(registry, res, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port: actual } = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}`;
  let closing: Promise<void> | undefined;
  return {
    server,
    url,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}
