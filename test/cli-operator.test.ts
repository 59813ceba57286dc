/**
 * What an operator does from the command line (issue 10), on the real binary: bulk retry and
 * cancel with a count and a confirmation, `list` with a header, filters and pages, `inspect` and
 * `list` showing what a bundle books but never who for, `inspect --follow` until the bundle is
 * terminal, and bounded input refused with exit 2 (HTTP 400) naming the field.
 */
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { confirm } from '../src/cli/confirm.js';
import { createTestDb, onCleanup } from './support/db.js';
import { cli, expectNoStack, expectRefusal } from './support/cli.js';
import { enqueueVip, quietLogger, startSimulator, startWorker, vipPayload } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { retryBundles } from '../src/supervisor/operator.js';
import { parseVipBundle } from '../src/bundles/input.js';
import { exampleId, soldOutId } from '../src/providers/simulator.js';
import { startHttpServer } from '../src/http/server.js';
import { BadInput } from '../src/errors.js';
import { superviseLoop } from '../src/cli/supervise-command.js';

/** A supervisor looping every 100 ms in this process, so failed bundles move on; stopped after the test. */
function startSupervisor(pool: import('pg').Pool): void {
  const loop = superviseLoop(pool, { logger: quietLogger(), backoffBaseSeconds: 0.05 }, 100);
  onCleanup(() => loop.stop());
}

const kill = (pool: import('pg').Pool, ids: string[]) =>
  pool.query(`UPDATE bundles SET state = 'dead', phase = 'undo', finished_at = now(), updated_at = now() WHERE id = ANY($1)`, [ids]);

async function states(pool: import('pg').Pool): Promise<Record<string, string>> {
  const { rows } = await pool.query<{ id: string; state: string }>('SELECT id, state FROM bundles');
  return Object.fromEntries(rows.map((r) => [r.id, r.state]));
}

describe('bulk retry and cancel', () => {
  it('retry --state dead counts, refuses without --yes when stdin is not a terminal, then retries each with --yes', async () => {
    const db = await createTestDb();
    const bundles = await enqueueVip(db.pool, 4);
    const dead = bundles.slice(0, 3).map((b) => b.vip_bundle_id);
    await kill(db.pool, dead);

    const refused = await cli(db.url, ['retry', '--state', 'dead']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('3 bundle(s) match');
    expect(refused.stderr).toMatch(/--yes: stdin is not a terminal.*pass --yes/);
    expectNoStack(refused);
    expect(Object.values(await states(db.pool)).filter((s) => s === 'dead')).toHaveLength(3);

    const done = await cli(db.url, ['retry', '--state', 'dead', '--yes', '--json']);
    expect(done.code, done.stderr).toBe(0);
    const report = JSON.parse(done.stdout);
    expect(report).toMatchObject({ matched: 3, retried: 3, skipped: 0 });
    expect(report.bundles.map((b: { vip_bundle_id: string }) => b.vip_bundle_id).sort()).toEqual([...dead].sort());
    for (const b of report.bundles) expect(Object.keys(b).sort()).toEqual(['booking_id', 'from_state', 'state', 'vip_bundle_id']);
    const after = await states(db.pool);
    for (const id of dead) expect(after[id]).toBe('compensating');
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundle_history WHERE reason = 'operator retry'`);
    expect(rows[0].n).toBe(3);

    const none = await cli(db.url, ['retry', '--state', 'dead', '--yes']);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/no bundles match/);
  });

  it('retry --since only takes bundles changed since then; cancel --older-than only bundles created before', async () => {
    const db = await createTestDb();
    const [old, recent, young, aged] = await enqueueVip(db.pool, 4);
    await kill(db.pool, [old!.vip_bundle_id, recent!.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET updated_at = now() - interval '3 hours' WHERE id = $1`, [old!.vip_bundle_id]);
    const retried = await cli(db.url, ['retry', '--state', 'dead', '--since', '1h', '--yes']);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toMatch(/^retried 1 of 1 bundle/);
    const s = await states(db.pool);
    expect([s[old!.vip_bundle_id], s[recent!.vip_bundle_id]]).toEqual(['dead', 'compensating']);

    await db.pool.query(`UPDATE bundles SET created_at = now() - interval '2 days' WHERE id = $1`, [aged!.vip_bundle_id]);
    const cancelled = await cli(db.url, ['cancel', '--state', 'pending', '--older-than', '1d', '--yes', '--json']);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(JSON.parse(cancelled.stdout)).toMatchObject({ matched: 1, cancelled: 1, skipped: 0, bundles: [{ vip_bundle_id: aged!.vip_bundle_id, from_state: 'pending', state: 'compensating' }] });
    expect((await states(db.pool))[young!.vip_bundle_id]).toBe('pending');
  });

  it('refuses bad bulk flags with exit 2 naming them', async () => {
    const db = await createTestDb();
    for (const [args, pattern] of [
      [['retry', '--state', 'pending', '--yes'], /--state: must be one of dead, failed/],
      [['cancel', '--state', 'completed', '--yes'], /--state: must be one of pending, running, waiting, failed/],
      [['retry', '--state', 'dead', '--since', 'yesterday'], /--since: must be an ISO 8601 time/],
      [['cancel', '--state', 'pending', '--older-than', '5'], /--older-than: must be a duration/],
      [['retry'], /give a bundle id, or --state/],
      [['retry', '--since', '1h', '--yes'], /^  --since: only with --state \(dead, failed\)/m],
      [['cancel', '--older-than', '1d', '--yes'], /^  --older-than: only with --state \(pending, running, waiting, failed\)/m],
      [['cancel', '--since', '1h', '--older-than', '1d'], /^  --since and --older-than: only with --state/m],
      [['retry', '00000000-0000-4000-8000-000000000000', '--state', 'dead'], /either a bundle id or --state/],
    ] as const) {
      const run = await cli(db.url, [...args]);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toMatch(pattern);
    }
  });

  it('--since refuses a date the calendar lacks, and --since and --older-than say the bound of a duration', async () => {
    const db = await createTestDb();
    for (const [args, message] of [
      [['list', '--since', '2026-02-30T00:00:00Z'], '--since: must be a real date: 2026-02-30 does not exist (got "2026-02-30T00:00:00Z")'],
      [['list', '--since', '2025-13-01'], '--since: must be a real date: 2025-13-01 does not exist (got "2025-13-01")'],
      [['retry', '--state', 'dead', '--since', '2025-04-31'], '--since: must be a real date: 2025-04-31 does not exist (got "2025-04-31")'],
      [['list', '--since', '10000d'], '--since: must be a duration more than 0 and at most 10 years, got "10000d"'],
      [['list', '--since', '0s'], '--since: must be a duration more than 0 and at most 10 years, got "0s"'],
      [['cancel', '--state', 'pending', '--older-than', '10000d'], '--older-than: must be a duration more than 0 and at most 10 years, got "10000d"'],
    ] as const) {
      const run = await cli(db.url, [...args]);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toBe(`bundlefleet: bad input:\n  ${message}\n`);
    }
    // A leap day that exists is still a time.
    expect((await cli(db.url, ['list', '--since', '2024-02-29T00:00:00Z', '--json'])).code).toBe(0);
  });

  it('the bulk functions run the single-bundle statement: a bundle that moved on in between is skipped', async () => {
    const db = await createTestDb();
    const [a, b] = await enqueueVip(db.pool, 2);
    await kill(db.pool, [a!.vip_bundle_id]);
    const moved = await retryBundles(db.pool, [a!.vip_bundle_id, b!.vip_bundle_id]);
    expect(moved).toEqual([{ vip_bundle_id: a!.vip_bundle_id, booking_id: a!.booking_id, from_state: 'dead', state: 'compensating' }]);
  });
});

describe('list and inspect', () => {
  it('list prints a header and pages with --after, filters with --state and --since, and refuses bad values', async () => {
    const db = await createTestDb();
    const bundles = await enqueueVip(db.pool, 5);
    // Distinct update times: bundle i changed i minutes ago.
    for (const [i, b] of bundles.entries()) await db.pool.query(`UPDATE bundles SET updated_at = now() - make_interval(mins => $2) WHERE id = $1`, [b.vip_bundle_id, i]);
    const text = await cli(db.url, ['list', '--limit', '2']);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^VIP_BUNDLE_ID\s+STATE\s+ATTEMPT\s+UPDATED_AT\s+SHOW_ID\s+INBOUND_FLIGHT_ID\s+RETURN_FLIGHT_ID\s+LAST_ERROR$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([bundles[0]!.vip_bundle_id, bundles[1]!.vip_bundle_id]);
    expect(text.stderr).toContain(`next page: bundlefleet list --limit 2 --after ${bundles[1]!.vip_bundle_id}`);

    const pages: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await cli(db.url, ['list', '--limit', '2', '--json', ...(after ? ['--after', after] : [])]);
      const rows = JSON.parse(page.stdout) as Array<{ vip_bundle_id: string }>;
      if (!rows.length) break;
      pages.push(...rows.map((r) => r.vip_bundle_id));
      after = rows[rows.length - 1]!.vip_bundle_id;
    }
    expect(pages).toEqual(bundles.map((b) => b.vip_bundle_id));

    const since = JSON.parse((await cli(db.url, ['list', '--since', '150s', '--json'])).stdout);
    expect(since.map((r: { vip_bundle_id: string }) => r.vip_bundle_id)).toEqual(bundles.slice(0, 3).map((b) => b.vip_bundle_id));
    await kill(db.pool, [bundles[4]!.vip_bundle_id]);
    const dead = JSON.parse((await cli(db.url, ['list', '--state', 'dead', '--json'])).stdout);
    expect(dead.map((r: { vip_bundle_id: string }) => r.vip_bundle_id)).toEqual([bundles[4]!.vip_bundle_id]);

    for (const [args, pattern, code] of [
      [['list', '--since', 'last tuesday'], /--since: must be an ISO 8601 time/, 2],
      [['list', '--since', '2999-01-01'], /--since: must not be in the future/, 2],
      [['list', '--after', 'abc'], /--after: must be a vip_bundle_id/, 2],
      [['list', '--limit', '0'], /--limit: must be at least 1/, 2],
      [['list', '--after', '00000000-0000-4000-8000-000000000000'], /no bundle with vip_bundle_id/, 1],
    ] as const) {
      const run = await cli(db.url, [...args]);
      expect(run.code, args.join(' ')).toBe(code);
      expect(run.stderr).toMatch(pattern);
    }
  });

  it('inspect and list show the show, the flights and the passenger count, never the email or the names', async () => {
    const db = await createTestDb();
    const payload = vipPayload();
    const [b] = await enqueueBundles(db.pool, [{ payload }]);
    const view = JSON.parse((await cli(db.url, ['inspect', b!.vip_bundle_id, '--json'])).stdout);
    expect(view.payload).toEqual({ show_id: payload.show_id, number_of_tickets: payload.number_of_tickets, inbound_flight_id: payload.inbound_flight_id, return_flight_id: payload.return_flight_id, passenger_count: 2 });
    const listed = JSON.parse((await cli(db.url, ['list', '--json'])).stdout);
    expect(listed[0].payload).toEqual(view.payload);
    const texts = [(await cli(db.url, ['inspect', b!.vip_bundle_id])).stdout, (await cli(db.url, ['list'])).stdout];
    expect(texts[0]).toContain(`show ${payload.show_id} × ${payload.number_of_tickets}  inbound ${payload.inbound_flight_id}  return ${payload.return_flight_id}  2 passenger(s)`);
    expect(texts[1]).toContain(payload.return_flight_id);
    for (const out of [...texts, JSON.stringify(view), JSON.stringify(listed)]) {
      expect(out).not.toContain(payload.customer_email);
      for (const name of payload.passengers) expect(out).not.toContain(name);
    }
  });

  it('inspect --follow streams the timeline until the bundle is terminal, then exits 0', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueBundles(db.pool, [{ payload: { ...vipPayload(), return_flight_id: soldOutId(1) } }]);
    let seen = '';
    let started = false;
    const follow = cli(db.url, ['inspect', b!.vip_bundle_id, '--follow'], {
      timeoutMs: 45_000,
      onStdout: (chunk) => {
        seen += chunk;
        // Start the worker only once the command is following, so what it prints was streamed.
        if (!started && seen.includes('timeline:')) {
          started = true;
          startWorker(db.url, sim, { logger: quietLogger() });
          startSupervisor(db.pool);
        }
      },
    });
    const run = await follow;
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/→ running/);
    expect(run.stdout).toMatch(/→ compensated/);
    expect(run.stdout.trim().split('\n').at(-1)).toBe('final state: compensated');

    const json = await cli(db.url, ['inspect', b!.vip_bundle_id, '--follow', '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ vip_bundle_id: b!.vip_bundle_id, state: 'compensated' });
  });
});

describe('bounded input', () => {
  const good = () => ({ ...vipPayload(), customer_email: 'ada@example.com' });

  it('refuses an oversized or malformed field with exit 2 naming it, and writes nothing', async () => {
    const db = await createTestDb();
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...good(), customer_email: `${'a'.repeat(1024 * 1024)}@example.com` }, /customer_email: must be at most 254 characters/],
      [{ ...good(), passengers: ['x'.repeat(101)] }, /passengers\.0: must be at most 100 characters/],
      [{ ...good(), idempotency_key: 'k'.repeat(201) }, /idempotency_key: must be at most 200 characters/],
      [{ ...good(), show_id: 'hamilton' }, /show_id: must be a UUID/],
      [{ ...good(), inbound_flight_id: 'BA117' }, /inbound_flight_id: must be a UUID/],
      [{ ...good(), return_flight_id: `${exampleId(3, 1)}0` }, /return_flight_id: must be a UUID/],
    ];
    for (const [payload, pattern] of cases) {
      const run = await cli(db.url, ['enqueue', '-'], { input: JSON.stringify(payload) });
      expect(run.code, String(pattern)).toBe(2);
      expect(run.stderr).toMatch(pattern);
      expect(run.stderr.length).toBeLessThan(2000);
      expectNoStack(run);
    }
    const flag = await cli(db.url, ['enqueue', '--customer-email', 'a@example.com', '--show-id', 'hamilton', '--tickets', '1', '--passenger', 'A', '--inbound-flight-id', exampleId(2, 1), '--return-flight-id', exampleId(3, 1)]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('--show-id (show_id: must be a UUID');
    // A passenger flag is named as a person counts (the 2nd, not passengers.1); the JSON document above keeps its path.
    const passengerFlags = (names: string[]) => ['enqueue', '--customer-email', 'a@example.com', '--show-id', exampleId(1, 1), '--tickets', '1', ...names.flatMap((n) => ['--passenger', n]), '--inbound-flight-id', exampleId(2, 1), '--return-flight-id', exampleId(3, 1)];
    const second = await cli(db.url, passengerFlags(['Ada', '']));
    expect(second.code).toBe(2);
    expect(second.stderr).toBe('bundlefleet: bad input:\n  --passenger (the 2nd passenger: must not be empty)\n');
    const third = await cli(db.url, passengerFlags(['Ada', 'Charles', 'x'.repeat(101)]));
    expect(third.stderr).toContain('--passenger (the 3rd passenger: must be at most 100 characters)');
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM bundles');
    expect(rows[0].n).toBe(0);
  });

  it('an empty batch is bad input (exit 2), not a silent success', async () => {
    const db = await createTestDb();
    const run = await cli(db.url, ['enqueue', '-', '--json'], { input: '[]\n' });
    expectRefusal(run, ['--json'], { exit: 2, code: 'BAD_INPUT' });
    expect(run.stderr).toMatch(/empty array/);
  });

  it('accepts UUIDs in any case and stores them lower case; the HTTP API refuses the same fields with 400', async () => {
    const p = parseVipBundle({ ...good(), show_id: exampleId(1, 10).toUpperCase() });
    expect(p.show_id).toBe(exampleId(1, 10));
    expect(() => parseVipBundle({ ...good(), customer_email: `${'a'.repeat(250)}@x.io` })).toThrow(BadInput);
    expect(parseVipBundle({ ...good(), customer_email: `${'a'.repeat(245)}@x.io` }).customer_email).toHaveLength(250);

    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger() });
    onCleanup(() => api.close(0));
    const res = await fetch(`${api.url}/book-vip-bundle`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...good(), customer_email: `${'a'.repeat(300)}@example.com`, show_id: 'hamilton' }),
    });
    expect(res.status).toBe(400);
    const text = await res.text();
    expect(text).toContain('customer_email');
    expect(text).toContain('show_id');
  });

  it('the simulator refuses the reserved sold-out range and books every other UUID', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    startWorker(db.url, sim);
    startSupervisor(db.pool);
    const [ok, no] = await enqueueBundles(db.pool, [{ payload: vipPayload() }, { payload: { ...vipPayload(), inbound_flight_id: soldOutId(42) } }], { kindVersion: 1 });
    const out = await cli(db.url, ['inspect', no!.vip_bundle_id, '--follow', '--json'], { timeoutMs: 45_000 });
    expect(JSON.parse(out.stdout).state).toBe('compensated');
    expect(JSON.parse((await cli(db.url, ['inspect', ok!.vip_bundle_id, '--follow', '--json'], { timeoutMs: 45_000 })).stdout).state).toBe('completed');
  });
});

describe('confirmation', () => {
  const terminal = (answer: string) => Object.assign(Readable.from([answer]), { isTTY: true });
  const sink = () => new PassThrough();

  it('asks on a terminal and goes on only on y or yes; --yes skips the question; no terminal is a refusal', async () => {
    expect(await confirm('retry 3 bundle(s)?', { what: 'x', input: terminal('y\n'), output: sink() })).toBe(true);
    expect(await confirm('retry 3 bundle(s)?', { what: 'x', input: terminal('YES\n'), output: sink() })).toBe(true);
    expect(await confirm('retry 3 bundle(s)?', { what: 'x', input: terminal('\n'), output: sink() })).toBe(false);
    expect(await confirm('retry 3 bundle(s)?', { what: 'x', input: terminal('nope\n'), output: sink() })).toBe(false);
    expect(await confirm('retry 3 bundle(s)?', { what: 'x', yes: true, input: Readable.from([]) })).toBe(true);
    await expect(confirm('retry 3 bundle(s)?', { what: 'retry these 3 bundle(s)', input: Readable.from([]) })).rejects.toThrow(/pass --yes to retry these 3 bundle/);
  });
});
