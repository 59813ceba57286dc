/**
 * The console's HTTP side: the operator's retry and cancel over HTTP, the "needs attention" view,
 * an Idempotency-Key reused with another body (422), refusals logged with their field names, the
 * loopback-only Host check of tokenless mode (DNS rebinding), and the status page's files served
 * from src/http/static/ by the compiled server as well as the sources.
 */
import { readdir, readFile } from 'node:fs/promises';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup, type TestDb } from './support/db.js';
import { quietLogger, vipPayload } from './support/fleet.js';
import { startHttpServer, type HttpServerOptions } from '../src/http/server.js';
import { STATIC_DIR, uiAsset } from '../src/http/pages.js';
import { createLogger } from '../src/logger.js';

async function serve(db: TestDb, opts: Partial<HttpServerOptions> = {}) {
  const server = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), ...opts });
  onCleanup(() => server.close(0));
  return server;
}

async function post(base: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json().catch(() => null)) as any };
}

async function getJson(base: string, path: string) {
  const res = await fetch(base + path);
  return { status: res.status, body: (await res.json()) as any };
}

/** A request with a Host header of our choosing, as a DNS rebinding page's browser would send. */
function withHost(url: string, host: string | null, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    // null: no Host header at all (HTTP/1.0 style).
    const options = host === null ? { method, headers, setHost: false } : { method, headers: { host, ...headers } };
    const req = http.request(url, options, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text.startsWith('{') ? JSON.parse(text) : text }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function stateOf(db: TestDb, id: string): Promise<{ state: string; phase: string }> {
  const { rows } = await db.pool.query('SELECT state, phase FROM bundles WHERE id = $1', [id]);
  return rows[0];
}

async function enqueue(api: { url: string }, headers: Record<string, string> = {}): Promise<{ vip_bundle_id: string; booking_id: string }> {
  const res = await post(api.url, '/book-vip-bundle', vipPayload(), headers);
  expect(res.status).toBe(201);
  return res.body;
}

describe('operator actions over HTTP', () => {
  it('POST /bundles/:id/cancel and /retry: 401 without the token, 200 with the transition, 409 and 404 with a reason', async () => {
    const db = await createTestDb();
    const auth = { authorization: 'Bearer tok' };
    const api = await serve(db, { apiToken: 'tok' });
    const b = await enqueue(api, auth);

    for (const action of ['cancel', 'retry']) {
      const refused = await post(api.url, `/bundles/${b.vip_bundle_id}/${action}`);
      expect(refused.status, action).toBe(401);
      expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    expect(await stateOf(db, b.vip_bundle_id)).toEqual({ state: 'pending', phase: 'book' });

    // Pending → compensating, by booking id too; the answer is the transition and nothing internal.
    const cancelled = await post(api.url, `/bundles/${b.booking_id}/cancel`, undefined, auth);
    expect(cancelled).toMatchObject({ status: 200, body: { vip_bundle_id: b.vip_bundle_id, booking_id: b.booking_id, from_state: 'pending', state: 'compensating' } });
    expect(Object.keys(cancelled.body).sort()).toEqual(['booking_id', 'from_state', 'state', 'vip_bundle_id']);
    const { rows: history } = await db.pool.query('SELECT actor, reason, to_state FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [b.vip_bundle_id]);
    expect(history.at(-1)).toEqual({ actor: 'http', reason: 'operator cancel', to_state: 'compensating' });

    // Neither applies now: 409 naming the state and what is allowed.
    const again = await post(api.url, `/bundles/${b.vip_bundle_id}/cancel`, undefined, auth);
    expect(again.status).toBe(409);
    expect(again.body.error).toMatch(/cannot cancel bundle .*: it is compensating; only pending, running, waiting, failed/);
    const early = await post(api.url, `/bundles/${b.vip_bundle_id}/retry`, undefined, auth);
    expect(early.status).toBe(409);
    expect(early.body.error).toMatch(/it is compensating; only dead, failed bundles can be retried/);

    // A dead bundle is retried: back to compensating (its undo is retried, it is never booked again).
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', failure_count = 3 WHERE id = $1`, [b.vip_bundle_id]);
    const retried = await post(api.url, `/bundles/${b.vip_bundle_id}/retry`, {}, auth);
    expect(retried).toMatchObject({ status: 200, body: { from_state: 'dead', state: 'compensating' } });
    expect(await stateOf(db, b.vip_bundle_id)).toEqual({ state: 'compensating', phase: 'undo' });

    const unknown = await post(api.url, '/bundles/00000000-0000-4000-8000-000000000000/retry', undefined, auth);
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatch(/no bundle/);
    const malformed = await post(api.url, '/bundles/not-a-uuid/cancel', undefined, auth);
    expect(malformed.status).toBe(400);
    expect(malformed.body.issues[0]).toMatch(/must be a UUID/);
    expect((await fetch(`${api.url}/bundles/${b.vip_bundle_id}/retry`)).status).toBe(405);
  });

  it('without a token, a cross-origin cancel is refused and nothing changes', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const b = await enqueue(api);
    const res = await post(api.url, `/bundles/${b.vip_bundle_id}/cancel`, undefined, { origin: 'https://evil.example' });
    expect(res.status).toBe(403);
    expect((await stateOf(db, b.vip_bundle_id)).state).toBe('pending');
  });
});

describe('needs attention', () => {
  it('lists stuck, dead and retrying bundles with counts, filtered by reason; others are left out', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const [healthy, done, stuckByAlert, stuckByLease, dead, retrying, failed, refused, undoRefused] = await Promise.all(Array.from({ length: 9 }, () => enqueue(api)));
    await db.pool.query(`UPDATE bundles SET state = 'completed', failure_count = 2, last_error = 'recovered' WHERE id = $1`, [done!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET state = 'running', locked_by = 'w1', locked_until = now() + interval '1 minute' WHERE id = $1`, [stuckByAlert!.vip_bundle_id]);
    await db.pool.query(`INSERT INTO alerts (bundle_id, kind, message) VALUES ($1, 'stuck', 'running for 12 min without progress')`, [stuckByAlert!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET state = 'running', locked_by = 'w2', locked_until = now() - interval '1 minute' WHERE id = $1`, [stuckByLease!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', last_error = 'taxi cancel: 500' WHERE id = $1`, [dead!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET failure_count = 1, last_error = 'flights: 503', next_run_at = now() + interval '30 seconds' WHERE id = $1`, [retrying!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET state = 'failed', failure_count = 1 WHERE id = $1`, [failed!.vip_bundle_id]);
    // A definitive no, before the supervisor's pass compensates it: not retried, so not "retrying".
    await db.pool.query(`UPDATE bundles SET state = 'failed', last_error_class = 'permanent', last_error = 'flights: sold out' WHERE id = $1`, [refused!.vip_bundle_id]);
    // An undo refused for good is still retried by the supervisor (up to --max-undo-attempts): listed.
    await db.pool.query(`UPDATE bundles SET state = 'failed', phase = 'undo', last_error_class = 'permanent', last_error = 'taxis cancel: 400' WHERE id = $1`, [undoRefused!.vip_bundle_id]);

    const all = await getJson(api.url, '/api/attention');
    expect(all.status).toBe(200);
    expect(all.body.counts).toEqual({ stuck: 2, dead: 1, retrying: 3 });
    const reasons = Object.fromEntries(all.body.bundles.map((b: { vip_bundle_id: string; reason: string }) => [b.vip_bundle_id, b.reason]));
    expect(reasons).toEqual({
      [stuckByAlert!.vip_bundle_id]: 'stuck',
      [stuckByLease!.vip_bundle_id]: 'stuck',
      [dead!.vip_bundle_id]: 'dead',
      [retrying!.vip_bundle_id]: 'retrying',
      [failed!.vip_bundle_id]: 'retrying',
      [undoRefused!.vip_bundle_id]: 'retrying',
    });
    expect(reasons[healthy!.vip_bundle_id]).toBeUndefined();
    expect(reasons[refused!.vip_bundle_id]).toBeUndefined();
    const byId = (id: string) => all.body.bundles.find((b: { vip_bundle_id: string }) => b.vip_bundle_id === id);
    expect(byId(stuckByAlert!.vip_bundle_id).why).toBe('running for 12 min without progress');
    expect(byId(stuckByLease!.vip_bundle_id).why).toMatch(/past its lease \(held by w2\)/);
    expect(byId(dead!.vip_bundle_id)).toMatchObject({ state: 'dead', phase: 'undo', why: 'taxi cancel: 500' });
    expect(byId(retrying!.vip_bundle_id).next_run_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const onlyDead = await getJson(api.url, '/api/attention?reason=dead');
    expect(onlyDead.body.bundles.map((b: { vip_bundle_id: string }) => b.vip_bundle_id)).toEqual([dead!.vip_bundle_id]);
    expect(onlyDead.body.counts).toEqual(all.body.counts);
    expect((await getJson(api.url, '/api/attention?reason=stuck&limit=1')).body.bundles).toHaveLength(1);
    const bad = await getJson(api.url, '/api/attention?reason=slow&limit=0');
    expect(bad.status).toBe(400);
    expect(bad.body.issues).toEqual([expect.stringMatching(/^reason: must be one of stuck, dead, retrying/), 'limit: must be at least 1']);
  });
});

describe('Idempotency-Key replay', () => {
  it('answers 422 naming the key when it is reused with a different body, and writes nothing', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const body = vipPayload();
    const first = await post(api.url, '/book-vip-bundle', body, { 'Idempotency-Key': 'order-7' });
    expect(first.status).toBe(201);
    // The same body with its fields in another order is the same request.
    const reordered = Object.fromEntries(Object.entries(body).reverse());
    expect(await post(api.url, '/book-vip-bundle', reordered, { 'Idempotency-Key': 'order-7' })).toMatchObject({ status: 200, body: first.body });

    const other = await post(api.url, '/book-vip-bundle', { ...body, customer_email: 'someone.else@example.com' }, { 'Idempotency-Key': 'order-7' });
    expect(other.status).toBe(422);
    expect(other.body).toEqual({ error: expect.stringMatching(/^Idempotency-Key "order-7" was already used with a different body/), idempotency_key: 'order-7' });
    // The key in the body instead of the header is the same key.
    expect((await post(api.url, '/book-vip-bundle', { ...vipPayload(), idempotency_key: 'order-7' })).status).toBe(422);

    const { rows } = await db.pool.query('SELECT payload FROM bundles');
    expect(rows).toEqual([{ payload: body }]);
    const events = await db.pool.query(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'VipBundleInitialized_v1'`);
    expect(events.rows[0].n).toBe(1);
  });
});

describe('request log lines', () => {
  it('a 400 line names the refused fields (never their values); a 422 and a 409 say why', async () => {
    const db = await createTestDb();
    const chunks: string[] = [];
    const logger = createLogger({ destination: { write: (s: string) => void chunks.push(s) }, level: 'info' });
    const api = await serve(db, { logger });
    const secret = 'refused.person@privacy-test.example';
    const res = await post(api.url, '/book-vip-bundle', { ...vipPayload(), customer_email: `${secret} `.repeat(2), number_of_tickets: 0, colour: 'red' });
    expect(res.status).toBe(400);
    const lines = chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const line = lines.find((l) => l.msg === 'request' && l.status === 400);
    expect(line).toBeDefined();
    expect(line.fields.sort()).toEqual(['colour', 'customer_email', 'number_of_tickets']);
    expect(line.issues).toContain('number_of_tickets: must be at least 1');

    const key = { 'Idempotency-Key': 'order-9' };
    expect((await post(api.url, '/book-vip-bundle', vipPayload(), key)).status).toBe(201);
    expect((await post(api.url, '/book-vip-bundle', { ...vipPayload(), customer_email: secret }, key)).status).toBe(422);
    const { rows } = await db.pool.query<{ id: string }>('SELECT id FROM bundles');
    expect((await post(api.url, `/bundles/${rows[0]!.id}/cancel`)).status).toBe(200);
    expect((await post(api.url, `/bundles/${rows[0]!.id}/cancel`)).status).toBe(409);
    const refusals = chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((l) => l.msg === 'request' && [422, 409].includes(l.status));
    expect(refusals.map((l) => [l.status, l.reason])).toEqual([
      [422, expect.stringMatching(/^Idempotency-Key "order-9" was already used with a different body/)],
      [409, expect.stringMatching(/^cannot cancel bundle .*: it is compensating/)],
    ]);
    expect(chunks.join('')).not.toContain(secret);
  });
});

describe('tokenless mode answers only loopback Host names (DNS rebinding)', () => {
  it('refuses a forged Host with 403 for reads and writes; accepts localhost, 127.0.0.1 and [::1] on any port', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    for (const host of ['evil.example', 'evil.example:8080', `rebind.attacker.test:${new URL(api.url).port}`, '10.0.0.5', 'localhost.evil.example', 'localhost.', '127.0.0.1.nip.io', '127.0.0.1@evil.example', '[::ffff:127.0.0.1]']) {
      const read = await withHost(`${api.url}/api/stats`, host);
      expect(read.status, host).toBe(403);
      expect(read.body.error).toMatch(/host not allowed/);
      // Origin equal to Host passed the old same-origin check; the rebinding page sends exactly that.
      const write = await withHost(`${api.url}/book-vip-bundle`, host, 'POST', { origin: `http://${host}`, 'content-type': 'application/json' });
      expect(write.status, host).toBe(403);
    }
    // No Host at all: node:http itself refuses an HTTP/1.1 request without one.
    expect((await withHost(`${api.url}/api/stats`, null)).status).toBe(400);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM bundles')).rows[0].n).toBe(0);
    for (const host of ['localhost', 'LOCALHOST:8080', '127.0.0.1', `127.0.0.1:${new URL(api.url).port}`, '127.1.2.3:9', '[::1]:8080', '[::1]']) {
      expect((await withHost(`${api.url}/api/stats`, host)).status, host).toBe(200);
    }
  });

  it('with a token any Host is answered (the token, not the address, guards writes)', async () => {
    const db = await createTestDb();
    const api = await serve(db, { apiToken: 'tok' });
    expect((await withHost(`${api.url}/api/stats`, 'bundlefleet.example.com')).status).toBe(200);
  });
});

describe('status page files', () => {
  it('serves every file of src/http/static/ as it is on disk, and the compiled server finds the same folder', async () => {
    const db = await createTestDb();
    const api = await serve(db);
    const files = await readdir(STATIC_DIR);
    expect(files.sort()).toEqual(['bundle.html', 'bundle.js', 'common.js', 'error.html', 'index.html', 'status.js', 'style.css']);
    for (const name of files.filter((f) => /\.(js|css)$/.test(f))) {
      const res = await fetch(`${api.url}/ui/${name}`);
      expect(res.status, name).toBe(200);
      expect(res.headers.get('content-type')).toMatch(name.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
      expect(await res.text()).toBe(await readFile(`${STATIC_DIR}${name}`, 'utf8'));
    }
    expect(await (await fetch(`${api.url}/`)).text()).toBe(await readFile(`${STATIC_DIR}index.html`, 'utf8'));
    for (const name of ['index.html', 'missing.js', '..%2Fpages.ts', '%2e%2e%2fserver.ts']) expect((await fetch(`${api.url}/ui/${name}`)).status, name).toBe(404);

    // `npm test` compiles first: dist/http/pages.js must resolve the same folder (no copy step to forget).
    const compiled = (await import('../dist/http/pages.js' as string)) as typeof import('../src/http/pages.js');
    expect(compiled.STATIC_DIR).toBe(STATIC_DIR);
    expect((await compiled.uiAsset('status.js'))?.body).toBe((await uiAsset('status.js'))?.body);
  });
});
