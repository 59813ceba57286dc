/**
 * The agent's log lines an operator reads (issue 10, "Logs and events"): step and bundle
 * durations at info, each retry within an attempt with its cause, and an operator cancel told
 * apart from a newer attempt taking over.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { allInState, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { cancelBundle } from '../src/supervisor/operator.js';
import { createLogger, redactPersonal, type Logger } from '../src/logger.js';
import { formatDuration } from '../src/agents/agent-log.js';

function capturingLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const logger = createLogger({ destination: { write: (s: string) => void chunks.push(s) }, level: 'info' });
  return { logger, lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

describe('agent logs', () => {
  it('formats durations for people', () => {
    expect(formatDuration(212.4)).toBe('212 ms');
    expect(formatDuration(1290)).toBe('1.3 s');
    expect(formatDuration(126_000)).toBe('2.1 min');
  });

  it('logs each step and the bundle with their durations at info', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 20 });
    const capture = capturingLogger();
    startWorker(db.url, sim, { logger: capture.logger });
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('completed', () => allInState(db.pool, ['completed']));
    await waitFor('the completion logged', async () => capture.lines().some((l) => String(l.msg).startsWith('bundle completed in')));
    const mine = capture.lines().filter((l) => l.bundleId === b!.vip_bundle_id && l.level === 'info');
    for (const step of ['show_tickets', 'inbound_flight', 'return_flight', 'taxi']) {
      const line = mine.find((l) => l.step === step && /^step \S+ booked in \d+ ms$/.test(String(l.msg)));
      expect(line, `no duration line for ${step}`).toBeDefined();
      expect(line!.msg).toBe(`step ${step} booked in ${line!.ms} ms`);
      expect(line!.ms as number).toBeGreaterThanOrEqual(20);
    }
    const done = mine.find((l) => String(l.msg).startsWith('bundle completed in'));
    expect(done!.msg).toMatch(/^bundle completed in (\d+ ms|\d+\.\d s)$/);
    expect(done!.ms as number).toBeGreaterThanOrEqual(80);
  });

  it('logs every retry within an attempt with its cause', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ failRate: 1 });
    const capture = capturingLogger();
    startWorker(db.url, sim, { logger: capture.logger });
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('the attempt failed', async () => capture.lines().some((l) => l.msg === 'attempt failed' && l.bundleId === b!.vip_bundle_id));
    const retries = capture.lines().filter((l) => l.bundleId === b!.vip_bundle_id && String(l.msg).includes('retrying'));
    expect(retries.map((l) => [l.level, l.step, l.try, l.retriesLeft])).toEqual([['warn', 'show_tickets', 1, 2], ['warn', 'show_tickets', 2, 1]]);
    for (const l of retries) {
      expect(l.error).toMatch(/provider answered 503/);
      expect(l.msg).toMatch(/^step show_tickets: provider call failed \(.*503.*\); retrying$/);
    }
  });

  it('says an operator cancelled the bundle, not that a newer attempt owns it', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 400 });
    const capture = capturingLogger();
    startWorker(db.url, sim, { logger: capture.logger });
    const [b] = await enqueueBundles(db.pool, [{ payload: vipPayload() }], { kindVersion: 1 });
    await waitFor('running', async () => (await db.pool.query(`SELECT 1 FROM bundles WHERE id = $1 AND state = 'running'`, [b!.vip_bundle_id])).rowCount === 1);
    await cancelBundle(db.pool, b!.vip_bundle_id, 'ops-alice');
    await waitFor('the agent stopped', async () => capture.lines().some((l) => l.bundleId === b!.vip_bundle_id && l.attempt === 1 && /operator|fenced/.test(String(l.msg))));
    const stop = capture.lines().filter((l) => l.bundleId === b!.vip_bundle_id && l.attempt === 1 && /operator|fenced/.test(String(l.msg)));
    expect(stop).toHaveLength(1);
    expect(stop[0]).toMatchObject({ level: 'info', cancelledBy: 'ops-alice', msg: 'stopped: an operator cancelled this bundle; its undo runs as a new attempt' });
  });
});

describe('redaction', () => {
  it('censors personal keys in logged objects, arrays and child bindings, without touching the caller’s object', () => {
    const payload = { customer_email: 'x@example.com', passengers: ['Ottoline Q'], show_id: 's' };
    const logged = { bundle: { payload }, list: [{ email: 'y@example.com' }] };
    expect(redactPersonal(logged)).toEqual({ bundle: { payload: { customer_email: '[redacted]', passengers: '[redacted]', show_id: 's' } }, list: [{ email: '[redacted]' }] });
    expect(payload.customer_email).toBe('x@example.com');
    const clean = { step: 'taxi', ms: 3, nested: { a: [1, 2] } };
    expect(redactPersonal(clean)).toBe(clean);
    const err = new Error('boom');
    expect(redactPersonal({ err }).err).toBe(err);

    const capture = capturingLogger();
    capture.logger.child({ payload }).info({ names: ['Ottoline Q'] }, 'bound');
    const [line] = capture.lines();
    expect(line).toMatchObject({ payload: { customer_email: '[redacted]', passengers: '[redacted]', show_id: 's' }, names: '[redacted]' });
    expect(JSON.stringify(line)).not.toMatch(/Ottoline|example\.com/);
  });
});
