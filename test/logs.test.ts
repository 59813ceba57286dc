/**
 * Personal data never reaches the logs: customer emails and passenger names are redacted in every
 * logged object and scrubbed from free text. A real worker and the HTTP server run at debug level
 * into memory, over bundles that complete and bundles a provider refuses; the captured text must
 * hold none of the emails or names, and must still say which bundles it was about.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { allInState, startSimulator, startWorker, waitFor } from './support/fleet.js';
import { exampleId } from '../src/providers/simulator.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { createLogger, type Logger } from '../src/logger.js';
import { startHttpServer } from '../src/http/server.js';

/** A pino logger writing JSON lines into memory at debug level. */
function capturingLogger(): { logger: Logger; text: () => string; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const logger = createLogger({ destination: { write: (s: string) => void chunks.push(s) }, level: 'debug' });
  return { logger, text: () => chunks.join(''), lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

/** Distinctive personal data, so a leak cannot hide behind a common word. */
function person(i: number) {
  return {
    email: `zelda.quist${i}@privacy-test.example`,
    passengers: [`Ottoline Vantwerp${i}`, `Bartholomew Kresnik${i}`],
  };
}

function payloadOf(i: number) {
  const p = person(i);
  return {
    customer_email: p.email,
    show_id: exampleId(1, i),
    number_of_tickets: 2,
    passengers: p.passengers,
    inbound_flight_id: exampleId(2, i),
    return_flight_id: exampleId(3, i),
  };
}

function expectNoPersonalData(text: string, people: Array<ReturnType<typeof person>>): void {
  for (const p of people) {
    expect(text, 'a customer email leaked into the logs').not.toContain(p.email);
    expect(text, 'part of a customer email leaked into the logs').not.toContain(p.email.split('@')[0]);
    for (const name of p.passengers) {
      expect(text, `passenger name ${name} leaked into the logs`).not.toContain(name);
      for (const part of name.split(' ')) expect(text, `part of passenger name ${name} leaked`).not.toContain(part);
    }
  }
}

describe('logs carry no personal data', () => {
  it('a worker booking and failing bundles at debug level logs bundle ids but no email or passenger name', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const capture = capturingLogger();
    startWorker(db.url, sim, { logger: capture.logger, concurrency: 4 });

    const good = await enqueueBundles(db.pool, [0, 1, 2].map((i) => ({ payload: payloadOf(i) })), { kindVersion: 1 });
    await waitFor('the first bundles completed', () => allInState(db.pool, ['completed']));

    // A provider that says no to everything: the agents log the failure (with its error) and stop.
    sim.setFaults({ noRate: 1 });
    const refused = await enqueueBundles(db.pool, [3, 4].map((i) => ({ payload: payloadOf(i) })), { kindVersion: 1 });
    await waitFor('the refused bundles failed', async () => {
      const { rows } = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE state = 'failed'`);
      return Number(rows[0]!.n) === refused.length;
    });
    // Transient errors too: 503s with retries inside the attempt.
    sim.setFaults({ noRate: 0, failRate: 1 });
    const flaky = await enqueueBundles(db.pool, [5].map((i) => ({ payload: payloadOf(i) })));
    await waitFor('the flaky bundle failed', async () => {
      const { rows } = await db.pool.query<{ state: string }>('SELECT state FROM bundles WHERE id = $1', [flaky[0]!.vip_bundle_id]);
      return rows[0]?.state === 'failed';
    });

    const text = capture.text();
    expectNoPersonalData(text, [0, 1, 2, 3, 4, 5].map(person));
    // The logs are still useful: they name the bundles, at every level, with the step.
    for (const b of [...good, ...refused, ...flaky]) expect(text).toContain(b.vip_bundle_id);
    const lines = capture.lines();
    expect(lines.some((l) => /^step taxi booked in \d+ ms$/.test(String(l.msg)) && l.step === 'taxi' && l.level === 'info')).toBe(true);
    expect(lines.some((l) => l.msg === 'attempt failed' && l.bundleId === refused[0]!.vip_bundle_id && l.errorClass === 'permanent')).toBe(true);
    expect(lines.some((l) => l.msg === 'attempt failed' && l.bundleId === flaky[0]!.vip_bundle_id && l.errorClass === 'transient')).toBe(true);
  });

  it('the HTTP server logs requests, refusals and enqueues without the body', async () => {
    const db = await createTestDb();
    const capture = capturingLogger();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: capture.logger });
    onCleanup(() => api.close(0));
    const send = (body: unknown) =>
      fetch(`${api.url}/book-vip-bundle`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
    const ok = await send(payloadOf(10));
    expect(ok.status).toBe(201);
    const { vip_bundle_id } = (await ok.json()) as { vip_bundle_id: string };
    expect((await send({ ...payloadOf(11), number_of_tickets: 0 })).status).toBe(400);
    expect((await send(JSON.stringify(payloadOf(12)).slice(0, -5))).status).toBe(400);
    expect((await fetch(`${api.url}/book-vip-bundle`, { method: 'POST', body: JSON.stringify(payloadOf(13)) })).status).toBe(415);
    await fetch(`${api.url}/bundles/${vip_bundle_id}`);

    const text = capture.text();
    expectNoPersonalData(text, [10, 11, 12, 13].map(person));
    expect(text).toContain(vip_bundle_id);
    expect(capture.lines().filter((l) => l.msg === 'request' && l.status === 400)).toHaveLength(2);
  });

  it('redacts customer_email and passengers wherever they sit in a logged object, and scrubs emails from error text', () => {
    const capture = capturingLogger();
    const p = person(20);
    const log = capture.logger.child({ worker: 'w1' }).child({ bundleId: 'b-1' }).child({ step: 'taxi' });
    log.info({ customer_email: p.email, passengers: p.passengers }, 'top level');
    log.info({ payload: { customer_email: p.email, passengers: p.passengers } }, 'one level down');
    log.info({ bundle: { payload: { customer_email: p.email, passengers: p.passengers } } }, 'two levels down');
    log.warn({ request: { body: { payload: { customer_email: p.email, passengers: p.passengers } } } }, 'three levels down');
    log.debug({ payload: { email: p.email, passenger: p.passengers[0], names: p.passengers } }, 'other spellings');
    const lines = capture.lines();
    expect(lines).toHaveLength(5);
    expectNoPersonalData(capture.text(), [p]);
    expect(lines[0]).toMatchObject({ customer_email: '[redacted]', passengers: '[redacted]', worker: 'w1', bundleId: 'b-1', step: 'taxi' });
    expect(lines[2]).toMatchObject({ bundle: { payload: { customer_email: '[redacted]', passengers: '[redacted]' } } });
  });
});
