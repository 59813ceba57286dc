/** The HTTP API on real PostgreSQL: enqueue, refusals that write nothing, auth, reads, health, metrics, alerts. */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup, type TestDb } from './support/db.js';
import { quietLogger, vipPayload } from './support/fleet.js';
import { startHttpServer, MAX_BODY_BYTES, type HttpServerOptions } from '../src/http/server.js';
import { createMetrics, startMetricsServer } from '../src/http/metrics.js';
import { routes, type Route } from '../src/http/routes.js';
import { createPool } from '../src/db/pool.js';
import { isLoopbackHost, apiTokenFromEnv } from '../src/cli/serve-command.js';
import { BadInput } from '../src/errors.js';
import { createLogger } from '../src/logger.js';

async function serve(db: TestDb, opts: Partial<HttpServerOptions> = {}) {
  const server = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), ...opts });
  onCleanup(() => server.close(0));
  return server;
}

const json = { 'content-type': 'application/json' };

async function post(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(base + path, { method: 'POST', headers: { ...json, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json().catch(() => null) };
}

async function get(base: string, path: string, headers: Record<string, string> = {}) {
  const res = await fetch(base + path, { headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, body: body as any, text };
}

async function countBundles(db: TestDb): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM bundles');
  return Number(rows[0]!.n);
}

/** A raw POST with node:http, which reads a response the server sends before the body is consumed. */
function rawPost(url: string, headers: Record<string, string | number>, write: (req: http.ClientRequest) => void): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    // The server closes the connection after a 413 while we may still be writing: that is expected.
    req.on('error', (err: NodeJS.ErrnoException) => (['EPIPE', 'ECONNRESET'].includes(err.code ?? '') ? undefined : reject(err)));
    write(req);
  });
}

describe('POST /book-vip-bundle', () => {
  it('answers 201 with both ids, then 200 with the same ids for the same Idempotency-Key header', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const body = vipPayload();
    const first = await post(api.url, '/book-vip-bundle', body, { 'Idempotency-Key': 'order-1' });
    expect(first.status).toBe(201);
    expect(Object.keys(first.body).sort()).toEqual(['booking_id', 'vip_bundle_id']);
    expect(first.headers.get('location')).toBe(`/bundles/${first.body.vip_bundle_id}`);
    const again = await post(api.url, '/book-vip-bundle', body, { 'Idempotency-Key': 'order-1' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(await countBundles(db)).toBe(1);
    const { rows } = await db.pool.query('SELECT idempotency_key, payload FROM bundles');
    expect(rows[0]).toMatchObject({ idempotency_key: 'order-1', payload: body });
    const events = await db.pool.query("SELECT data FROM pgboss.job WHERE name = 'VipBundleInitialized_v1'");
    expect(events.rows.map((r) => r.data.header.correlation_id)).toEqual([first.body.vip_bundle_id]);
  });

  it('takes the key from the body field too, and the same key in both places is one key', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const body = { ...vipPayload(), idempotency_key: 'order-2' };
    const first = await post(api.url, '/book-vip-bundle', body);
    expect(first.status).toBe(201);
    const again = await post(api.url, '/book-vip-bundle', body);
    expect(again).toMatchObject({ status: 200, body: first.body });
    const both = await post(api.url, '/book-vip-bundle', body, { 'Idempotency-Key': 'order-2' });
    expect(both).toMatchObject({ status: 200, body: first.body });
    // Without a key every request is a new bundle.
    const { idempotency_key: _, ...keyless } = body;
    expect((await post(api.url, '/book-vip-bundle', keyless)).status).toBe(201);
    expect((await post(api.url, '/book-vip-bundle', keyless)).status).toBe(201);
    expect(await countBundles(db)).toBe(3);
  });

  it('refuses a header key that differs from the body key, writing nothing', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const res = await post(api.url, '/book-vip-bundle', { ...vipPayload(), idempotency_key: 'a' }, { 'Idempotency-Key': 'b' });
    expect(res.status).toBe(400);
    expect(res.body.issues).toEqual([expect.stringMatching(/^idempotency_key: differs from the Idempotency-Key header/)]);
    expect(await countBundles(db)).toBe(0);
  });

  it('answers 400 listing every field error, and writes nothing', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const res = await post(api.url, '/book-vip-bundle', { customer_email: 'not-an-email', number_of_tickets: 0, passengers: [], show_id: '  ', colour: 'red' }, { 'Idempotency-Key': '' });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('bad input');
    const fields = (res.body.issues as string[]).map((i) => i.split(':')[0]).sort();
    expect(fields).toEqual(['Idempotency-Key header', 'colour', 'customer_email', 'inbound_flight_id', 'number_of_tickets', 'passengers', 'return_flight_id', 'show_id'].sort());
    expect(res.body.issues).toContain('customer_email: must be an email address');
    expect(res.body.issues).toContain('colour: unknown field');
    expect(await countBundles(db)).toBe(0);
    const events = await db.pool.query("SELECT count(*) AS n FROM pgboss.job WHERE name = 'VipBundleInitialized_v1'");
    expect(Number(events.rows[0].n)).toBe(0);
  });

  it('answers 400 for JSON that does not parse and for a body that is not an object', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const broken = await post(api.url, '/book-vip-bundle', '{"customer_email": ');
    expect(broken.status).toBe(400);
    expect(broken.body.issues[0]).toMatch(/^body: not valid JSON/);
    const list = await post(api.url, '/book-vip-bundle', [vipPayload()]);
    expect(list.status).toBe(400);
    expect(list.body.issues).toEqual(['(body): expected a JSON object (a bundle), got an array']);
    const number = await post(api.url, '/book-vip-bundle', '42');
    expect(number.status).toBe(400);
    expect(number.body.issues).toEqual(['(body): expected a JSON object (a bundle), got a number']);
    expect(await countBundles(db)).toBe(0);
  });

  it('answers 413 for a body over 64 KiB, declared or streamed, and writes nothing', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const big = JSON.stringify({ ...vipPayload(), show_id: 'x'.repeat(MAX_BODY_BYTES) });
    const declared = await rawPost(`${api.url}/book-vip-bundle`, { ...json, 'content-length': Buffer.byteLength(big) }, (req) => req.end(big));
    expect(declared.status).toBe(413);
    expect(JSON.parse(declared.body).error).toMatch(/too large/);
    // Chunked: no Content-Length, the cap applies while reading.
    const streamed = await rawPost(`${api.url}/book-vip-bundle`, { ...json, 'transfer-encoding': 'chunked' }, (req) => {
      for (let i = 0; i < 10; i++) req.write(big.slice(i * 8192, (i + 1) * 8192));
      req.end();
    });
    expect(streamed.status).toBe(413);
    // Exactly at the limit is accepted (JSON allows trailing spaces); one byte more is not.
    const atLimit = JSON.stringify(vipPayload()).padEnd(MAX_BODY_BYTES, ' ');
    expect(Buffer.byteLength(atLimit)).toBe(MAX_BODY_BYTES);
    expect((await post(api.url, '/book-vip-bundle', `${atLimit} `)).status).toBe(413);
    expect((await post(api.url, '/book-vip-bundle', atLimit)).status).toBe(201);
    expect(await countBundles(db)).toBe(1);
  });

  it('answers 415 for a content type other than JSON, and writes nothing', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const res = await post(api.url, '/book-vip-bundle', JSON.stringify(vipPayload()), { 'content-type': type });
      expect(res.status, type).toBe(415);
    }
    const res = await fetch(`${api.url}/book-vip-bundle`, { method: 'POST', body: new Blob([JSON.stringify(vipPayload())]) });
    expect(res.status).toBe(415);
    // A charset parameter is fine.
    expect((await post(api.url, '/book-vip-bundle', vipPayload(), { 'content-type': 'application/json; charset=utf-8' })).status).toBe(201);
    expect(await countBundles(db)).toBe(1);
  });

  it('needs the bearer token when one is configured: 401 without it or with a wrong one, 201 with it', async () => {
    const db = await createTestDb();
    const api = await serve(db, { apiToken: 's3cret-token' });
    for (const authorization of [undefined, 'Bearer wrong', 'Bearer s3cret-toke', 'Bearer s3cret-token-and-more', 'Basic s3cret-token', 's3cret-token']) {
      const res = await post(api.url, '/book-vip-bundle', vipPayload(), authorization ? { authorization } : {});
      expect(res.status, String(authorization)).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    expect(await countBundles(db)).toBe(0);
    const ok = await post(api.url, '/book-vip-bundle', vipPayload(), { authorization: 'Bearer s3cret-token' });
    expect(ok.status).toBe(201);
    // Reads stay open.
    expect((await get(api.url, `/bundles/${ok.body.vip_bundle_id}`)).status).toBe(200);
  });

  it('refuses a cross-origin write when no token is configured (a page elsewhere posting to localhost)', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const res = await post(api.url, '/book-vip-bundle', vipPayload(), { origin: 'https://evil.example' });
    expect(res.status).toBe(403);
    const same = await post(api.url, '/book-vip-bundle', vipPayload(), { origin: api.url });
    expect(same.status).toBe(201);
    expect(await countBundles(db)).toBe(1);
  });
});

describe('reads, health and routing', () => {
  it('GET /bundles/:id gives the inspect JSON by either id; 404 unknown; 400 malformed', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const { body: ids } = await post(api.url, '/book-vip-bundle', vipPayload());
    for (const id of [ids.vip_bundle_id, ids.booking_id, ids.booking_id.toUpperCase()]) {
      const res = await get(api.url, `/bundles/${id}`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ vip_bundle_id: ids.vip_bundle_id, booking_id: ids.booking_id, state: 'pending', kind: 'vip' });
      expect(res.body).toMatchObject({ kind_version: 2 });
      expect(res.body.steps.map((s: { name: string }) => s.name)).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'await_ticketing', 'taxi']);
      expect(res.body.history[0]).toMatchObject({ to_state: 'pending', reason: 'enqueued', actor: 'http' });
    }
    // The payload (email, passengers) is not part of the inspect view.
    expect(JSON.stringify((await get(api.url, `/bundles/${ids.vip_bundle_id}`)).body)).not.toMatch(/@example\.com|Passenger/);
    const unknown = await get(api.url, '/bundles/00000000-0000-4000-8000-000000000000');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatch(/no bundle/);
    for (const bad of ['not-a-uuid', '123', '%E0%A4%A']) {
      const res = await get(api.url, `/bundles/${bad}`);
      expect(res.status, bad).toBe(400);
      expect(res.body.error).toBe('bad input');
    }
  });

  it('GET /bundles/:id has finished_at: null while unfinished, then the finish, which a later ack (moving updated_at) leaves alone', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const { body: ids } = await post(api.url, '/book-vip-bundle', vipPayload());
    expect((await get(api.url, `/bundles/${ids.vip_bundle_id}`)).body).toMatchObject({ finished_at: null });
    const finished = '2026-01-02T03:04:05.678Z';
    await db.pool.query(`UPDATE bundles SET state = 'compensated', finished_at = $2, updated_at = $2 WHERE id = $1`, [ids.vip_bundle_id, finished]);
    expect((await post(api.url, `/bundles/${ids.vip_bundle_id}/ack`, {})).status).toBe(200);
    const view = (await get(api.url, `/bundles/${ids.vip_bundle_id}`)).body;
    expect(view.finished_at).toBe(finished);
    expect(Date.parse(view.updated_at)).toBeGreaterThan(Date.parse(finished));
  });

  it('/healthz is 200; /readyz is 200, 503 while draining, 503 when the database is unreachable', async () => {
    const db = await createTestDb();
    let draining = false;
    const api = await serve(db, { isDraining: () => draining });
    expect(await get(api.url, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await get(api.url, '/readyz')).toMatchObject({ status: 200, body: { status: 'ready' } });
    draining = true;
    expect(await get(api.url, '/readyz')).toMatchObject({ status: 503, body: { status: 'draining' } });
    expect((await get(api.url, '/healthz')).status).toBe(200);

    const nowhere = createPool('postgres://bundlefleet@127.0.0.1:1/none');
    onCleanup(() => nowhere.end());
    const down = await startHttpServer({ port: 0, pool: nowhere, logger: quietLogger() });
    onCleanup(() => down.close(0));
    expect(await get(down.url, '/readyz')).toMatchObject({ status: 503, body: { status: 'database unreachable' } });
    expect((await get(down.url, '/healthz')).status).toBe(200);
    // A read that needs the database says so with 503, not a stack trace.
    const stats = await get(down.url, '/api/stats');
    expect(stats.status).toBe(503);
    expect(stats.body.error).toMatch(/database unavailable/);
  });

  it('answers 404 for unknown routes and 405 with Allow for a wrong method', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    expect((await get(api.url, '/nope')).status).toBe(404);
    const wrong = await get(api.url, '/book-vip-bundle');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
    expect((await post(api.url, '/healthz', {})).status).toBe(405);
  });

  it('/api/stats and /api/bundles feed the status page; bad query parameters are 400', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    for (let i = 0; i < 3; i++) await post(api.url, '/book-vip-bundle', vipPayload());
    const stats = await get(api.url, '/api/stats');
    expect(stats.body).toMatchObject({ total: 3, by_state: { pending: 3, completed: 0 }, open_alerts: 0 });
    const list = await get(api.url, '/api/bundles?state=pending&limit=2');
    expect(list.body).toHaveLength(2);
    expect((await get(api.url, '/api/bundles?state=')).body).toHaveLength(3);
    expect((await get(api.url, '/api/bundles?state=completed')).body).toEqual([]);
    const bad = await get(api.url, '/api/bundles?state=done&limit=0');
    expect(bad.status).toBe(400);
    expect(bad.body.issues).toEqual([expect.stringMatching(/^state: must be one of/), 'limit: must be at least 1']);
    const throughput = await get(api.url, '/api/throughput?minutes=5');
    expect(throughput.body).toHaveLength(5);
    expect((await get(api.url, '/api/throughput?minutes=abc')).status).toBe(400);
  });

  it('every query string endpoint refuses an unknown, repeated or non-decimal parameter with 400 naming it', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    await post(api.url, '/book-vip-bundle', vipPayload());
    for (const [path, issues] of [
      ['/api/bundles?after=x', ['after: unknown query parameter (this endpoint takes state, limit)']],
      ['/api/bundles?foo=1&limit=2', ['foo: unknown query parameter (this endpoint takes state, limit)']],
      ['/api/bundles?limit=1&limit=2', ['limit: given more than once']],
      ['/api/bundles?limit=0x10', ['limit: must be a whole number']],
      ['/api/bundles?limit=1.0', ['limit: must be a whole number']],
      ['/api/attention?why=1', ['why: unknown query parameter (this endpoint takes reason, limit)']],
      ['/api/attention?limit=1e1', ['limit: must be a whole number']],
      ['/api/alerts?al=true', ['al: unknown query parameter (this endpoint takes all)']],
      ['/api/throughput?minute=5', ['minute: unknown query parameter (this endpoint takes minutes)']],
      ['/api/throughput?minutes=0x5', ['minutes: must be a whole number']],
    ] as const) {
      const res = await get(api.url, path);
      expect(res.status, path).toBe(400);
      expect(res.body, path).toEqual({ error: 'bad input', issues });
    }
    // What the status page asks for still answers.
    expect((await get(api.url, '/api/bundles?limit=25&state=pending')).body).toHaveLength(1);
    expect((await get(api.url, '/api/throughput?minutes= 15 ')).status).toBe(200);
  });

  it('a signal body with a mistyped id or data is 400 in the product\'s words, not zod\'s', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const created = await post(api.url, '/book-vip-bundle', vipPayload());
    const path = `/bundles/${created.body.vip_bundle_id}/signals/inbound_ticketed`;
    for (const [body, issues] of [
      [{ id: 5 }, ['id: must be a string']],
      [{ data: [1] }, ['data: must be a JSON object']],
      [{ id: null, data: 'x' }, ['id: must be a string', 'data: must be a JSON object']],
    ] as const) {
      const res = await post(api.url, path, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body, JSON.stringify(body)).toEqual({ error: 'bad input', issues });
    }
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM bundle_signals');
    expect(rows[0].n).toBe(0);
  });

  it('serves the status page, its assets and a bundle page, with a strict CSP', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const page = await get(api.url, '/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    expect(page.text).toContain('<script src="/ui/status.js" defer></script>');
    for (const asset of ['style.css', 'common.js', 'status.js', 'bundle.js']) expect((await get(api.url, `/ui/${asset}`)).status, asset).toBe(200);
    expect((await get(api.url, '/ui/missing.js')).status).toBe(404);
    const id = '4a3f1c2e-0000-4000-8000-000000000001';
    const bundlePage = await get(api.url, `/ui/bundles/${id}`);
    expect(bundlePage.status).toBe(200);
    expect(bundlePage.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    expect(bundlePage.text).toContain('<script src="/ui/bundle.js" defer></script>');
    const bad = await get(api.url, `/ui/bundles/${encodeURIComponent('<script>alert(1)</script>')}`);
    expect(bad.status).toBe(400);
    expect(bad.text).not.toContain('<script>alert');
    expect(bad.text).toContain('&lt;script&gt;');
  });
});

describe('metrics', () => {
  it('/metrics exposes the fleet gauges, the per-process counters and Node defaults', async () => {
    const db = await createTestDb();
    const metrics = createMetrics({ logger: quietLogger() });
    metrics.collectFromDb(db.pool);
    const api = await serve(db, { metrics });
    for (let i = 0; i < 2; i++) await post(api.url, '/book-vip-bundle', vipPayload());
    await db.pool.query(`INSERT INTO alerts (bundle_id, kind, message) VALUES (gen_random_uuid(), 'stuck', 'stuck for 10 min')`);
    metrics.hooks.onClaim(2);
    metrics.hooks.onStep('taxi', 'booked', 0.03);
    metrics.hooks.onStep('taxi', 'error', 2);
    metrics.hooks.onOutcome('completed');
    metrics.hooks.onSupervisorAction('reset', 3);
    metrics.hooks.onSupervisorAction('dead', 0);
    const res = await get(api.url, '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    for (const name of [
      'bundlefleet_bundles',
      'bundlefleet_claims_total',
      'bundlefleet_step_outcomes_total',
      'bundlefleet_step_duration_seconds',
      'bundlefleet_bundle_outcomes_total',
      'bundlefleet_supervisor_actions_total',
      'bundlefleet_open_alerts',
      'bundlefleet_oldest_due_pending_age_seconds',
      'process_cpu_user_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(res.text, name).toContain(`# TYPE ${name} `);
    }
    expect(res.text).toContain('bundlefleet_bundles{state="pending"} 2');
    expect(res.text).toContain('bundlefleet_bundles{state="completed"} 0');
    expect(res.text).toContain('bundlefleet_open_alerts 1');
    expect(res.text).toContain('bundlefleet_claims_total 2');
    expect(res.text).toContain('bundlefleet_step_outcomes_total{step="taxi",outcome="booked"} 1');
    expect(res.text).toContain('bundlefleet_step_duration_seconds_count{step="taxi"} 2');
    expect(res.text).toContain('bundlefleet_bundle_outcomes_total{outcome="completed"} 1');
    expect(res.text).toContain('bundlefleet_supervisor_actions_total{action="reset"} 3');
    expect(res.text).not.toContain('action="dead"');
    expect(res.text).toContain('bundlefleet_database_up 1');
    expect(res.text).toMatch(/bundlefleet_oldest_due_pending_age_seconds \d/);
  });

  it('a worker-only registry has no fleet gauge values, and startMetricsServer serves GET /metrics', async () => {
    const metrics = createMetrics({ logger: quietLogger() });
    metrics.hooks.onClaim(5);
    const server = await startMetricsServer(0, metrics.registry);
    onCleanup(() => server.close());
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('bundlefleet_claims_total 5');
    expect(text).not.toMatch(/^bundlefleet_bundles\{/m);
    expect((await fetch(`${server.url}/`)).status).toBe(404);
    expect((await fetch(`${server.url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it("serve's own metrics log lines name their component once (no duplicate JSON key)", async () => {
    // serve passes no metrics: the server makes its own, and its warnings once carried
    // "component":"http","component":"metrics" (a child of the http logger).
    const chunks: string[] = [];
    const logger = createLogger({ destination: { write: (s: string) => void chunks.push(s) }, level: 'debug' });
    const deadPool = createPool('postgres://u:x@127.0.0.1:1/none', { max: 1 });
    onCleanup(() => deadPool.end());
    const server = await startHttpServer({ port: 0, pool: deadPool, logger });
    onCleanup(() => server.close(0));
    await (await fetch(`${server.url}/metrics`)).text();
    const lines = chunks.join('').split('\n').filter(Boolean);
    const warning = lines.find((l) => l.includes('metrics: could not read fleet stats'));
    expect(warning, lines.join('\n')).toBeDefined();
    expect(JSON.parse(warning!).component).toBe('metrics');
    for (const line of lines) expect(line.match(/"component":/g)?.length ?? 0, line).toBeLessThanOrEqual(1);
  });
});

describe('alerts API', () => {
  it('lists open alerts and acknowledges one (token required when set); unknown 404, malformed 400', async () => {
    const db = await createTestDb();
    const api = await serve(db, { apiToken: 'tok' });
    const { rows } = await db.pool.query<{ id: string }>(
      `INSERT INTO alerts (bundle_id, kind, message) VALUES (gen_random_uuid(), 'stuck', 'bundle stuck in running for 12 min'), (gen_random_uuid(), 'dead', 'compensation exhausted') RETURNING id`,
    );
    const [first, second] = rows.map((r) => String(r.id));
    const open = await get(api.url, '/api/alerts');
    expect(open.status).toBe(200);
    expect(open.body.map((a: { id: string }) => a.id).sort()).toEqual([first, second].sort());

    expect((await post(api.url, `/api/alerts/${first}/ack`, {})).status).toBe(401);
    const noBody = await fetch(`${api.url}/api/alerts/${first}/ack`, { method: 'POST', headers: { authorization: 'Bearer tok' } });
    expect(noBody.status).toBe(200);
    const acked = (await noBody.json()) as { id: string; acked_at: string | null };
    expect(acked.id).toBe(first);
    expect(acked.acked_at).not.toBeNull();
    // Acknowledging again is harmless and keeps the first time.
    const again = await post(api.url, `/api/alerts/${first}/ack`, {}, { authorization: 'Bearer tok' });
    expect(again).toMatchObject({ status: 200, body: { acked_at: acked.acked_at } });

    expect((await get(api.url, '/api/alerts')).body.map((a: { id: string }) => a.id)).toEqual([second]);
    expect((await get(api.url, '/api/alerts?all=true')).body).toHaveLength(2);
    expect((await get(api.url, '/api/stats')).body.open_alerts).toBe(1);
    expect((await post(api.url, '/api/alerts/999999/ack', {}, { authorization: 'Bearer tok' })).status).toBe(404);
    expect((await post(api.url, '/api/alerts/abc/ack', {}, { authorization: 'Bearer tok' })).status).toBe(400);
  });
});

describe('serve command helpers', () => {
  it('tells loopback hosts from the rest', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', 'LOCALHOST']) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'example.com', '128.0.0.1', '::ffff:10.0.0.1']) expect(isLoopbackHost(host), host).toBe(false);
  });

  it('reads BUNDLEFLEET_API_TOKEN, refusing a blank one', () => {
    expect(apiTokenFromEnv({})).toBeUndefined();
    expect(apiTokenFromEnv({ BUNDLEFLEET_API_TOKEN: ' abc ' })).toBe('abc');
    expect(() => apiTokenFromEnv({ BUNDLEFLEET_API_TOKEN: '  ' })).toThrow(BadInput);
  });
});

/**
 * docs/http.md against the route table: its endpoint table and its list of writes name paths as
 * templates (`/bundles/:id/retry`, `/ui/<file>`, `retry|cancel|ack` for siblings, `?query`); each
 * becomes a sample path (every parameter a plain segment) that the route regexes must match.
 */
function samplePaths(template: string): string[] {
  const path = template.split('?')[0]!.replace(/:[a-z_]+|<[a-z_]+>/g, 'x');
  // One sample per alternative of a segment like `retry|cancel|ack`.
  return path.split('/').reduce<string[]>((prefixes, segment) => prefixes.flatMap((p) => segment.split('|').map((alt) => (p === '' && alt === '' ? '' : `${p}/${alt}`))), ['']).map((p) => p || '/');
}

/** `METHOD /path` pairs named in backticks in `text`, expanded to sample paths. */
function documented(text: string): Array<{ method: string; path: string }> {
  return [...text.matchAll(/`(GET|POST) (\/[^`\s]*)`/g)].flatMap(([, method, template]) => samplePaths(template!).map((path) => ({ method: method!, path })));
}

describe('docs/http.md', () => {
  it('lists every route of routes.ts in its endpoint table, and every write route among the writes that need the token', async () => {
    const docs = await readFile(fileURLToPath(new URL('../docs/http.md', import.meta.url)), 'utf8');
    const section = (heading: string) => docs.slice(docs.indexOf(heading), docs.indexOf('\n## ', docs.indexOf(heading) + heading.length));
    const table = documented(section('## Endpoints').split('\n').filter((l) => l.startsWith('| `')).map((l) => l.split(' | ')[0]).join('\n'));
    const writes = documented(/^- Writes \(([^)]*)\)/m.exec(section('## Authentication'))![1]!);
    const all = routes({ pool: {} as never, metrics: {} as never, isDraining: () => false, ping: async () => undefined });
    const matches = (r: Route, d: { method: string; path: string }) => r.method === d.method && r.path.test(d.path);
    expect(table.length).toBeGreaterThan(15);
    for (const r of all) {
      expect(table.some((d) => matches(r, d)), `${r.method} ${r.path} is not in the endpoint table of docs/http.md`).toBe(true);
      if (r.write) expect(writes.some((d) => matches(r, d)), `${r.method} ${r.path} is not among the writes in docs/http.md`).toBe(true);
    }
    // And nothing documented that the server does not answer, or listed as a write that is not one.
    for (const d of table) expect(all.some((r) => matches(r, d)), `docs/http.md names ${d.method} ${d.path}, which no route answers`).toBe(true);
    for (const d of writes) expect(all.find((r) => matches(r, d))?.write, `docs/http.md lists ${d.method} ${d.path} as a write`).toBe(true);
  });
});
