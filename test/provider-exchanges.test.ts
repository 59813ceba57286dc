/**
 * Every provider exchange kept for inspection (issue 11, part 4): a worker's agents record each
 * request and reply (status, duration, attempt, worker, step, redacted and bounded bodies),
 * failures and timeouts included; `inspect` shows them; retention prunes them; and a failure to
 * record never fails a bundle.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb, onCleanup } from './support/db.js';
import { cli } from './support/cli.js';
import { quietLogger, simulatorUrls, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { pruneBatch } from '../src/supervisor/retention.js';
import { ProviderClient } from '../src/providers/client.js';
import { MAX_BODY_CHARS, type ProviderExchange } from '../src/providers/exchange.js';
import { ExchangeRecorder } from '../src/agents/exchange-recorder.js';

interface Row {
  step: string;
  attempt: number;
  worker_id: string;
  operation: string;
  method: string;
  path: string;
  status: number | null;
  outcome: string;
  error: string | null;
  duration_ms: number;
  request_body: string | null;
  response_body: string | null;
}

async function exchanges(pool: pg.Pool, bundleId: string): Promise<Row[]> {
  const { rows } = await pool.query<Row>('SELECT * FROM provider_exchanges WHERE bundle_id = $1 ORDER BY id', [bundleId]);
  return rows;
}

const stateOf = async (pool: pg.Pool, id: string) => (await pool.query('SELECT state FROM bundles WHERE id = $1', [id])).rows[0].state as string;

describe('provider exchanges', () => {
  it('are written in batches: the exchanges reported within the delay share one statement, and flush writes what waits', async () => {
    const db = await createTestDb();
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    const statements: string[] = [];
    const counting = { query: (...a: Parameters<pg.Pool['query']>) => (statements.push(String((a[0] as { text?: string }).text ?? a[0])), db.pool.query(...a)) } as unknown as pg.Pool;
    const recorder = new ExchangeRecorder(counting, quietLogger());
    const exchange = (step: string): ProviderExchange => ({
      context: { bundleId: b!.vip_bundle_id, attempt: 1, workerId: 'w', step },
      provider: 'tickets', operation: 'book', method: 'POST', path: '/tickets/bookings', status: 201, outcome: 'ok', error: null, durationMs: 3, at: new Date(), requestBody: null, responseBody: null,
    });
    for (const step of ['show_tickets', 'inbound_flight', 'return_flight']) recorder.record(exchange(step));
    await waitFor('the batch written', async () => (await exchanges(db.pool, b!.vip_bundle_id)).length === 3);
    expect(statements).toHaveLength(1);
    // A stopping worker flushes: what waits for its batch is written at once, not lost.
    recorder.record(exchange('taxi'));
    await recorder.flush();
    expect((await exchanges(db.pool, b!.vip_bundle_id)).map((r) => r.step)).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
    expect(statements).toHaveLength(2);
  });


  it('keep one statement in flight: while a write is slow, the exchanges that come meanwhile wait and go in the next one', async () => {
    const db = await createTestDb();
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let sent = 0;
    // A database that is slow to answer the first write (as under the faults of DESIGN.md): a real query, its reply held.
    const slow = { query: async (...a: Parameters<pg.Pool['query']>) => { const n = ++sent; const result = await db.pool.query(...a); if (n === 1) await held; return result; } } as unknown as pg.Pool;
    const recorder = new ExchangeRecorder(slow, quietLogger());
    const exchange = (path: string): ProviderExchange => ({
      context: { bundleId: b!.vip_bundle_id, attempt: 1, workerId: 'w', step: 'show_tickets' },
      provider: 'tickets', operation: 'book', method: 'POST', path, status: 201, outcome: 'ok', error: null, durationMs: 3, at: new Date(), requestBody: null, responseBody: null,
    });
    recorder.record(exchange('/1'));
    await waitFor('the first write sent', async () => sent === 1);
    for (const path of ['/2', '/3', '/4']) {
      recorder.record(exchange(path));
      await new Promise((r) => setTimeout(r, 150)); // past the batch delay each time
    }
    expect(sent).toBe(1);
    release();
    await recorder.flush();
    expect(sent).toBe(2);
    expect((await db.pool.query('SELECT path FROM provider_exchanges ORDER BY id')).rows.map((r) => r.path)).toEqual(['/1', '/2', '/3', '/4']);
  });

  it('keep batching while the database is slow: exchanges that come during a write wait for their own delay, not for the write to end', async () => {
    const db = await createTestDb();
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    let sent = 0;
    // Every write takes 30 ms (a real query, its reply late); an exchange comes every 5 ms for 1 s.
    const slow = { query: async (...a: Parameters<pg.Pool['query']>) => { sent++; const result = await db.pool.query(...a); await new Promise((r) => setTimeout(r, 30)); return result; } } as unknown as pg.Pool;
    const recorder = new ExchangeRecorder(slow, quietLogger());
    for (let i = 0; i < 200; i++) {
      recorder.record({ context: { bundleId: b!.vip_bundle_id, attempt: 1, workerId: 'w', step: 'taxi' }, provider: 'taxis', operation: 'book', method: 'POST', path: `/${i}`, status: 201, outcome: 'ok', error: null, durationMs: 1, at: new Date(), requestBody: null, responseBody: null });
      await new Promise((r) => setTimeout(r, 5));
    }
    await recorder.flush();
    expect((await exchanges(db.pool, b!.vip_bundle_id)).length).toBe(200);
    // One write per 100 ms delay (plus its 30 ms): about 10; a write sent as soon as the one before ended made about 35.
    expect(sent).toBeLessThanOrEqual(16);
  });

  it('a stopping worker does not wait out one timeout per batch while the database is down: the first failed write drops the rest', async () => {
    const db = await createTestDb();
    let sent = 0;
    const down = { query: async () => { sent++; await new Promise((r) => setTimeout(r, 100)); throw new Error('connection timeout'); } } as unknown as pg.Pool;
    const recorder = new ExchangeRecorder(down, quietLogger());
    for (let i = 0; i < 1200; i++) {
      recorder.record({ context: { bundleId: '00000000-0000-4000-8000-000000000001', attempt: 1, workerId: 'w', step: 'taxi' }, provider: 'taxis', operation: 'book', method: 'POST', path: `/${i}`, status: null, outcome: 'transient', error: 'x', durationMs: 1, at: new Date(), requestBody: null, responseBody: null });
    }
    await recorder.flush();
    expect(sent).toBe(1); // the write of the first 500 (started by record) failed: flush drops the other 700
    await db.pool.query('SELECT 1');
  });

  it("records a bundle's four bookings with status, duration, attempt, worker and step, without any email or passenger name", async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 5 });
    const worker = startWorker(db.url, sim);
    const payload = { ...vipPayload(), customer_email: 'ada.lovelace@example.org', passengers: ['Ada Lovelace', 'Charles Babbage'] };
    const [b] = await enqueueBundles(db.pool, [{ payload }], { kindVersion: 1 });
    await waitFor('completed', async () => (await stateOf(db.pool, b!.vip_bundle_id)) === 'completed');
    await waitFor('four exchanges', async () => (await exchanges(db.pool, b!.vip_bundle_id)).length === 4);

    const rows = await exchanges(db.pool, b!.vip_bundle_id);
    expect(rows.map((r) => r.step)).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
    expect(rows.map((r) => r.path)).toEqual(['/tickets/bookings', '/flights/bookings', '/flights/bookings', '/taxis/bookings']);
    for (const r of rows) {
      expect(r).toMatchObject({ attempt: 1, worker_id: worker.workerId, operation: 'book', method: 'POST', status: 201, outcome: 'ok', error: null });
      expect(r.duration_ms).toBeGreaterThanOrEqual(5);
      expect(r.duration_ms).toBeLessThan(2000);
      expect(JSON.parse(r.response_body!).reference).toEqual(expect.any(String));
      expect(JSON.parse(r.request_body!).customer_email).toBe('[redacted]');
    }
    expect(JSON.parse(rows[1]!.request_body!)).toMatchObject({ passengers: '[redacted]', flight_id: payload.inbound_flight_id });
    const { rows: leaks } = await db.pool.query(
      `SELECT count(*)::int AS n FROM provider_exchanges WHERE concat(request_body, response_body, error) ~* '(lovelace|babbage|@example)'`,
    );
    expect(leaks[0].n).toBe(0);
  });

  it('records 5xx replies and timeouts as failed exchanges, each try of an attempt', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ failRate: 1 });
    startWorker(db.url, sim, { providerRetries: 1 });
    const [failing] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('two 503s', async () => (await exchanges(db.pool, failing!.vip_bundle_id)).length >= 2);
    const fails = await exchanges(db.pool, failing!.vip_bundle_id);
    expect(fails.slice(0, 2)).toMatchObject([
      { step: 'show_tickets', attempt: 1, status: 503, outcome: 'transient' },
      { step: 'show_tickets', attempt: 1, status: 503, outcome: 'transient' },
    ]);
    expect(fails[0]!.error).toContain('provider answered 503');
    expect(JSON.parse(fails[0]!.response_body!)).toEqual({ error: 'service unavailable (injected)' });

    sim.setFaults({ failRate: 0, hangRate: 1, hangMs: 3_000 });
    const slow = startWorker(db.url, sim, { providerRetries: 0, providerTimeoutMs: 300 });
    const [hanging] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('a timeout', async () => (await exchanges(db.pool, hanging!.vip_bundle_id)).length >= 1);
    const [timeout] = await exchanges(db.pool, hanging!.vip_bundle_id);
    expect(timeout).toMatchObject({ status: null, outcome: 'transient', response_body: null });
    expect(timeout!.error).toMatch(/timed out after (300|2000) ms/);
    expect(timeout!.duration_ms).toBeGreaterThanOrEqual(290);
    expect(timeout!.request_body).toContain('[redacted]');
    expect(slow).toBeDefined();
  });

  it('inspect shows the exchanges, in text and --json', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    startWorker(db.url, sim);
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('four exchanges', async () => (await exchanges(db.pool, b!.vip_bundle_id)).length === 4);

    const text = await cli(db.url, ['inspect', b!.vip_bundle_id]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('provider exchanges:\n');
    expect(text.stdout).toMatch(/#1 +show_tickets +POST \/tickets\/bookings {2}201 {2}\d+ ms/);
    expect(text.stdout).toMatch(/→ \{"show_id":.*"customer_email":"\[redacted\]"/);
    expect(text.stdout).toMatch(/← \{.*"reference":/);
    expect(text.stdout).not.toMatch(/@example\.com|Passenger \d/);

    const json = await cli(db.url, ['inspect', b!.vip_bundle_id, '--json']);
    const view = JSON.parse(json.stdout);
    expect(view.exchanges).toHaveLength(4);
    expect(view.exchanges_omitted).toBe(0);
    expect(view.exchanges[3]).toMatchObject({ step: 'taxi', method: 'POST', path: '/taxis/bookings', status: 201, outcome: 'ok', attempt: 1 });
    expect(view.exchanges[3].duration_ms).toEqual(expect.any(Number));
  });

  it("retention prunes a pruned bundle's exchanges, and exchanges older than the retention", async () => {
    const db = await createTestDb();
    const [gone, kept] = await enqueueBundles(db.pool, [{ payload: vipPayload() }, { payload: vipPayload() }]);
    const insert = (bundleId: string, age: string) =>
      db.pool.query(
        `INSERT INTO provider_exchanges (bundle_id, provider, operation, method, path, status, outcome, duration_ms, at)
         VALUES ($1, 'tickets', 'book', 'POST', '/tickets/bookings', 201, 'ok', 3, now() - $2::interval)`,
        [bundleId, age],
      );
    await insert(gone!.vip_bundle_id, '1 minute');
    await insert(kept!.vip_bundle_id, '3 days');
    await insert(kept!.vip_bundle_id, '1 minute');
    await db.pool.query(`UPDATE bundles SET state = 'completed', finished_at = now() - interval '2 days' WHERE id = $1`, [gone!.vip_bundle_id]);
    await pruneBatch(db.pool, 86_400, 100);
    const { rows } = await db.pool.query<{ bundle_id: string; old: boolean }>(`SELECT bundle_id, at < now() - interval '1 day' AS old FROM provider_exchanges`);
    expect(rows).toEqual([{ bundle_id: kept!.vip_bundle_id, old: false }]);
  });

  it('a bundle completes when its exchanges cannot be recorded', async () => {
    const db = await createTestDb();
    await db.pool.query('ALTER TABLE provider_exchanges RENAME TO provider_exchanges_away');
    const sim = await startSimulator();
    startWorker(db.url, sim);
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('completed', async () => (await stateOf(db.pool, b!.vip_bundle_id)) === 'completed');
  });
});

describe('provider client hook', () => {
  /** A provider that echoes the request's personal data back, in fields the logger does not know, and pads the reply. */
  async function echoingProvider(): Promise<string> {
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const b = JSON.parse(body || '{}');
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ reference: 'R1', note: `booked for ${b.customer_email} (${(b.passengers ?? []).join(', ')})`, padding: 'x'.repeat(5000) }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    onCleanup(() => new Promise((r) => server.close(r)));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('reports every exchange with its context, redacts personal values the reply repeats, bounds bodies, and survives a throwing hook', async () => {
    const url = await echoingProvider();
    const seen: ProviderExchange[] = [];
    const client = new ProviderClient({ tickets: url, flights: url, taxis: url }, { onExchange: (e) => seen.push(e) });
    await client.book('flights', 'k1', { flight_id: 'f', customer_email: 'grace@navy.mil', passengers: ['Grace Hopper'] }, undefined, { bundleId: 'b1', step: 'inbound_flight', attempt: 2 });
    expect(seen).toHaveLength(1);
    const [e] = seen;
    expect(e).toMatchObject({ context: { bundleId: 'b1', step: 'inbound_flight', attempt: 2 }, operation: 'book', status: 201, outcome: 'ok' });
    expect(e!.responseBody!.length).toBeLessThanOrEqual(MAX_BODY_CHARS + 40);
    expect(e!.responseBody).toMatch(/more characters\]$/);
    expect(e!.responseBody).toContain('"note":"booked for [redacted] ([redacted])"');
    expect(`${e!.requestBody}${e!.responseBody}`).not.toMatch(/grace|hopper|navy/i);

    const throwing = new ProviderClient({ tickets: url, flights: url, taxis: url }, { onExchange: () => { throw new Error('hook broke'); } });
    await expect(throwing.book('taxis', 'k2', { customer_email: 'a@b.co' })).resolves.toMatchObject({ reference: 'R1' });

    const sim = await startSimulator({ failRate: 1 });
    const failed: ProviderExchange[] = [];
    await new ProviderClient(simulatorUrls(sim), { onExchange: (x) => failed.push(x) }).cancel('taxis', 'k3').catch(() => {});
    expect(failed).toMatchObject([{ operation: 'cancel', status: 503, outcome: 'transient' }]);
  });
});
