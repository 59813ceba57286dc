/**
 * /metrics passes `promtool check metrics` (the Prometheus linter) on serve and on a worker: each
 * scrape is parsed and linted by test/support/promlint.ts, which applies promtool's rules without
 * needing promtool. .ci/run also runs the real promtool over a live /metrics when it is installed.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { quietLogger, vipPayload } from './support/fleet.js';
import { lintExposition, parseExposition } from './support/promlint.js';
import { startHttpServer } from '../src/http/server.js';
import { createMetrics, startMetricsServer } from '../src/http/metrics.js';

describe('the linter itself', () => {
  it('reports what promtool reports, and refuses text that does not parse', () => {
    const bad = [
      '# HELP app_active_total Active things',
      '# TYPE app_active_total gauge',
      'app_active_total 3',
      '# HELP app_requests Requests',
      '# TYPE app_requests counter',
      'app_requests 1',
      '# TYPE app_latency_ms histogram',
      'app_latency_ms_bucket{le="+Inf"} 1',
      'app_latency_ms_sum 1',
      'app_latency_ms_count 1',
      '# HELP app_queueDepth Depth',
      '# TYPE app_queueDepth gauge',
      'app_queueDepth{queueName="a"} 1',
      '# HELP app_wait_milliseconds Wait',
      '# TYPE app_wait_milliseconds gauge',
      'app_wait_milliseconds 1',
      '',
    ].join('\n');
    expect(lintExposition(bad)).toEqual([
      'app_active_total non-counter metrics should not have "_total" suffix',
      'app_requests counter metrics should have "_total" suffix',
      'app_latency_ms no help text',
      'app_latency_ms metric names should not contain abbreviated units',
      "app_queueDepth metric names should be written in 'snake_case' not 'camelCase'",
      "app_queueDepth label names should be written in 'snake_case' not 'camelCase'",
      'app_wait_milliseconds use base unit "seconds" instead of "milliseconds"',
    ]);
    expect(lintExposition('# TYPE x gauge\nx{a="1" 2\n')[0]).toMatch(/^error while linting: line 2/);
    expect(lintExposition('# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n')[0]).toMatch(/appears in two places/);
    expect(lintExposition('# HELP x X\n# TYPE x gauge\nx 1')[0]).toMatch(/must end with a newline/);
    expect(lintExposition('# HELP h H\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n')[0]).toMatch(/no \+Inf bucket/);
    expect(lintExposition('# HELP x X\n# TYPE x gauge\nx 1\n')).toEqual([]);
  });
});

describe('/metrics passes the linter', () => {
  it("serve's scrape (fleet gauges with values, counters, histogram, Node defaults) has no problem", async () => {
    const db = await createTestDb();
    const metrics = createMetrics({ logger: quietLogger() });
    metrics.collectFromDb(db.pool);
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), metrics });
    onCleanup(() => api.close(0));
    await fetch(`${api.url}/book-vip-bundle`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(vipPayload()) });
    metrics.hooks.onClaim(1);
    metrics.hooks.onStep('taxi', 'booked', 0.02);
    metrics.hooks.onOutcome('completed');
    metrics.hooks.onSupervisorAction('orphans', 1);
    const text = await (await fetch(`${api.url}/metrics`)).text();
    expect(lintExposition(text)).toEqual([]);
    const families = new Map(parseExposition(text).map((f) => [f.name, f]));
    // Every fleet gauge has its values; the per-type active handles stay where the _total gauge went.
    for (const name of ['bundlefleet_bundles', 'bundlefleet_open_alerts', 'bundlefleet_oldest_due_pending_age_seconds', 'bundlefleet_database_up']) {
      expect(families.get(name)?.samples.length, name).toBeGreaterThan(0);
    }
    expect(families.get('bundlefleet_bundles')!.samples.find((s) => s.labels.state === 'pending')?.value).toBe(1);
    expect(families.has('nodejs_active_handles_total')).toBe(false);
    expect(families.get('nodejs_active_handles')?.type).toBe('gauge');
  });

  it("a worker's scrape has no problem and no fleet-wide gauge it would never fill", async () => {
    const metrics = createMetrics({ logger: quietLogger() });
    metrics.hooks.onClaim(2);
    const server = await startMetricsServer(0, metrics.registry);
    onCleanup(() => server.close());
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(lintExposition(text)).toEqual([]);
    const names = parseExposition(text).map((f) => f.name);
    expect(names).toContain('bundlefleet_claims_total');
    for (const fleet of ['bundlefleet_bundles', 'bundlefleet_open_alerts', 'bundlefleet_oldest_due_pending_age_seconds', 'bundlefleet_database_up']) expect(names).not.toContain(fleet);
  });
});
