/**
 * The `bundlefleet` command line as a user runs it: `node bin/bundlefleet ...` in its own process,
 * against a real database. Exit codes: 0 ok, 1 failure, 2 bad usage or bad input (invariant 7:
 * bad input is refused with a clear message and writes nothing).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createTestDb, onCleanup, urlFor } from './support/db.js';
import { BIN, cli, expectNoStack, expectRefusal, jsonLines, tempDir } from './support/cli.js';
import { exampleId } from '../src/providers/simulator.js';

const SHOW = exampleId(1, 1);
const INBOUND = exampleId(2, 117);
const RETURN = exampleId(3, 118);
const bundleFlags = (email = 'ada@example.com') => [
  '--customer-email', email, '--show-id', SHOW, '--tickets', '2',
  '--passenger', 'Ada Lovelace', '--passenger', 'Charles Babbage',
  '--inbound-flight-id', INBOUND, '--return-flight-id', RETURN,
];

const bundleJson = (i: number) => ({
  customer_email: `c${i}@example.com`, show_id: exampleId(1, i), number_of_tickets: 1 + i, passengers: [`P ${i}`], inbound_flight_id: exampleId(2, i), return_flight_id: exampleId(3, i),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function countRows(pool: pg.Pool, table = 'bundles'): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  return rows[0]!.n;
}

/** A database with nothing in it (not cloned from the migrated template); dropped after the test. */
async function emptyDatabase(): Promise<string> {
  const name = `e_${Math.random().toString(36).slice(2, 12)}`;
  const admin = new pg.Client({ connectionString: inject('adminUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  onCleanup(async () => {
    const c = new pg.Client({ connectionString: inject('adminUrl') });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => c.end());
  });
  return urlFor(name);
}

describe('bundlefleet enqueue', () => {
  it('enqueues from flags and prints the two ids with --json; the same idempotency key gives the same ids', async () => {
    const db = await createTestDb();
    const first = await cli(db.url, ['enqueue', ...bundleFlags(), '--idempotency-key', 'order-1', '--json']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const [out, ...rest] = jsonLines(first.stdout);
    expect(rest).toEqual([]);
    expect(Object.keys(out!).sort()).toEqual(['booking_id', 'vip_bundle_id']);
    expect(out!.vip_bundle_id).toMatch(UUID);
    expect(out!.booking_id).toMatch(UUID);

    const again = await cli(db.url, ['enqueue', ...bundleFlags(), '--idempotency-key', 'order-1', '--json']);
    expect(again.code).toBe(0);
    expect(jsonLines(again.stdout)).toEqual([out]);
    expect(await countRows(db.pool)).toBe(1);
    const { rows } = await db.pool.query('SELECT id, booking_id, state, payload FROM bundles');
    expect(rows[0]).toMatchObject({ id: out!.vip_bundle_id, booking_id: out!.booking_id, state: 'pending' });
    expect(rows[0].payload).toEqual({
      customer_email: 'ada@example.com', show_id: SHOW, number_of_tickets: 2,
      passengers: ['Ada Lovelace', 'Charles Babbage'], inbound_flight_id: INBOUND, return_flight_id: RETURN,
    });
  });

  it('refuses an idempotency key reused with another body (flags, --json and text): exit 2 naming the key, nothing written; the same body is still a replay', async () => {
    const db = await createTestDb();
    const withTickets = (n: string) => {
      const flags = bundleFlags();
      flags[flags.indexOf('--tickets') + 1] = n;
      return ['enqueue', ...flags, '--idempotency-key', 'flag-k'];
    };
    const first = await cli(db.url, [...withTickets('1'), '--json']);
    expect(first.code, first.stderr).toBe(0);
    const out = jsonLines(first.stdout)[0]!;

    for (const mode of [['--json'], []]) {
      const refused = await cli(db.url, [...withTickets('5'), ...mode]);
      expectRefusal(refused, mode, { exit: 2, code: 'BAD_INPUT' });
      // Nothing on stderr but the refusal, naming the key (never the other request's bundle).
      expect(refused.stderr).toBe('bundlefleet: bad input:\n  idempotency_key "flag-k" was already used with a different body; use a new key for a new booking\n');
      expectNoStack(refused);
    }
    expect(await countRows(db.pool)).toBe(1);
    expect(await countRows(db.pool, 'bundle_history')).toBe(0);

    const replayJson = await cli(db.url, [...withTickets('1'), '--json']);
    expect(replayJson.code, replayJson.stderr).toBe(0);
    expect(jsonLines(replayJson.stdout)).toEqual([out]);
    const replayText = await cli(db.url, withTickets('1'));
    expect(replayText.code, replayText.stderr).toBe(0);
    expect(replayText.stdout).toBe(`already enqueued (same idempotency key) vip_bundle_id=${out.vip_bundle_id} booking_id=${out.booking_id}\n`);
    expect(await countRows(db.pool)).toBe(1);
  });

  it('refuses an NDJSON input holding a reused idempotency key with another body: exit 2 naming the key and its place, nothing of the batch written', async () => {
    const db = await createTestDb();
    const keyed = { ...bundleJson(0), idempotency_key: 'nd-k' };
    const first = await cli(db.url, ['enqueue', '-', '--json'], { input: `${JSON.stringify(keyed)}\n` });
    expect(first.code, first.stderr).toBe(0);
    const out = JSON.parse(first.stdout) as Record<string, unknown>;

    // A blank line: the refusal names the line, not the item.
    const input = `${JSON.stringify(bundleJson(1))}\n\n${JSON.stringify({ ...keyed, number_of_tickets: 5 })}\n`;
    for (const mode of [['--json'], []]) {
      const refused = await cli(db.url, ['enqueue', '-', ...mode], { input });
      expectRefusal(refused, mode, { exit: 2, code: 'BAD_INPUT' });
      expect(refused.stderr).toBe('bundlefleet: bad input:\n  line 3: idempotency_key "nd-k" was already used with a different body; use a new key for a new booking\n');
      expectNoStack(refused);
    }
    expect(await countRows(db.pool)).toBe(1);

    // The same line again (its fields in another order) is a replay, beside a new bundle.
    const reordered = Object.fromEntries(Object.entries(keyed).reverse());
    const replay = await cli(db.url, ['enqueue', '-'], { input: `${JSON.stringify(bundleJson(2))}\n${JSON.stringify(reordered)}\n` });
    expect(replay.code, replay.stderr).toBe(0);
    const lines = replay.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^enqueued vip_bundle_id=/);
    expect(lines[1]).toBe(`already enqueued (same idempotency key) vip_bundle_id=${out.vip_bundle_id} booking_id=${out.booking_id}`);
    const replayJson = await cli(db.url, ['enqueue', '-', '--json'], { input: `${JSON.stringify(keyed)}\n` });
    expect(JSON.parse(replayJson.stdout)).toEqual(out);
    expect(await countRows(db.pool)).toBe(2);
  });

  it('a large input refused for a reused idempotency key in its second batch prints the bundles of the first, which stay enqueued', async () => {
    const db = await createTestDb();
    await cli(db.url, ['enqueue', '-'], { input: JSON.stringify({ ...bundleJson(0), idempotency_key: 'big-k' }) });
    const lines = [...Array.from({ length: 1000 }, (_, i) => JSON.stringify(bundleJson(i % 10))), JSON.stringify({ ...bundleJson(1), idempotency_key: 'big-k' })];
    const run = await cli(db.url, ['enqueue', '-', '--json'], { input: `${lines.join('\n')}\n` });
    const doc = expectRefusal(run, ['--json'], { exit: 2, code: 'BAD_INPUT' })!;
    expect(doc.enqueued).toHaveLength(1000);
    expect(doc.issues).toEqual([
      'line 1001: idempotency_key "big-k" was already used with a different body; use a new key for a new booking',
      'the first 1000 bundle(s) of the input were enqueued (listed in "enqueued"), none after them',
    ]);
    expect(run.stderr).toBe('bundlefleet: bad input:\n  line 1001: idempotency_key "big-k" was already used with a different body; use a new key for a new booking\n  the first 1000 bundle(s) of the input were enqueued (listed in "enqueued"), none after them\n');
    expect(await countRows(db.pool)).toBe(1001);
  });

  it('enqueues every line of an NDJSON file and from stdin', async () => {
    const db = await createTestDb();
    const cwd = await tempDir();
    await writeFile(join(cwd, 'bundles.ndjson'), [0, 1, 2].map((i) => JSON.stringify(bundleJson(i))).join('\n') + '\n');
    const fromFile = await cli(db.url, ['enqueue', '--file', 'bundles.ndjson', '--json'], { cwd });
    expect(fromFile.code).toBe(0);
    // --json is one document: an array for a batch.
    const lines = JSON.parse(fromFile.stdout) as Array<Record<string, unknown>>;
    expect(lines).toHaveLength(3);
    expect(new Set(lines.map((l) => l.vip_bundle_id)).size).toBe(3);
    expect(await countRows(db.pool)).toBe(3);

    const fromStdin = await cli(db.url, ['enqueue', '-', '--json'], { input: `${JSON.stringify(bundleJson(3))}\n${JSON.stringify(bundleJson(4))}\n` });
    expect(fromStdin.code).toBe(0);
    expect(JSON.parse(fromStdin.stdout)).toHaveLength(2);
    expect(await countRows(db.pool)).toBe(5);
    // One JSON object in, one object out; a JSON array of one, an array of one.
    const one = await cli(db.url, ['enqueue', '-', '--json'], { input: JSON.stringify(bundleJson(5)) });
    expect(Object.keys(JSON.parse(one.stdout)).sort()).toEqual(['booking_id', 'vip_bundle_id']);
    const arrayOfOne = await cli(db.url, ['enqueue', '-', '--json'], { input: JSON.stringify([bundleJson(6)]) });
    expect(JSON.parse(arrayOfOne.stdout)).toHaveLength(1);
    expect(await countRows(db.pool)).toBe(7);
    const { rows } = await db.pool.query(`SELECT payload->>'show_id' AS show FROM bundles ORDER BY 1`);
    expect(rows.map((r) => r.show)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => exampleId(1, i)));
  });

  it('refuses a file with a bad field and a line that is not JSON, naming both lines, and writes nothing', async () => {
    const db = await createTestDb();
    const cwd = await tempDir();
    const lines = [JSON.stringify(bundleJson(0)), JSON.stringify({ ...bundleJson(1), number_of_tickets: 'two' }), '{"customer_email": "x@example.com",'];
    await writeFile(join(cwd, 'bad.ndjson'), lines.join('\n') + '\n');
    const run = await cli(db.url, ['enqueue', '--file', 'bad.ndjson', '--json'], { cwd });
    const doc = expectRefusal(run, ['--json'], { exit: 2, code: 'BAD_INPUT' })!;
    expect(doc.issues).toEqual([expect.stringMatching(/^line 2: number_of_tickets/), expect.stringMatching(/^line 3: not valid JSON/)]);
    expect(run.stderr).toMatch(/line 2: number_of_tickets/);
    expect(run.stderr).toMatch(/line 3: not valid JSON/);
    expect(run.stderr).not.toMatch(/line 1/);
    expectNoStack(run);
    expect(await countRows(db.pool)).toBe(0);
    expect(await countRows(db.pool, 'bundle_history')).toBe(0);
    expect(await countRows(db.pool, 'pgboss.job')).toBe(0);
  });

  it('refuses an input that is not a bundle object (a bare number, a string, null) saying what it expected, and writes nothing', async () => {
    const db = await createTestDb();
    const cases: Array<[string, string]> = [
      ['42', 'input: expected a JSON object (a bundle), an array of them or NDJSON lines, got a number'],
      ['42\n', 'input: expected a JSON object (a bundle), an array of them or NDJSON lines, got a number'],
      ['"hello"', 'input: expected a JSON object (a bundle), an array of them or NDJSON lines, got a string'],
      ['null', 'input: expected a JSON object (a bundle), an array of them or NDJSON lines, got null'],
      [JSON.stringify([bundleJson(0), 7]), 'item 2: expected a JSON object (a bundle), got a number'],
      [`${JSON.stringify(bundleJson(0))}\n[1]\n`, 'line 2: expected a JSON object (a bundle), got an array'],
    ];
    for (const [input, message] of cases) {
      for (const args of [['enqueue', '-'], ['enqueue', '-', '--json']]) {
        const run = await cli(db.url, args, { input });
        expect(run.code, `${JSON.stringify(input)}: ${run.stderr}`).toBe(2);
        expectRefusal(run, args, { exit: 2, code: 'BAD_INPUT' });
        expect(run.stderr).toContain(message);
        expect(run.stderr).not.toMatch(/\(body\)|Invalid input|received/);
        expectNoStack(run);
      }
    }
    expect(await countRows(db.pool)).toBe(0);
  });

  it('refuses bad flags with exit 2, naming the flag, and writes nothing', async () => {
    const db = await createTestDb();
    const badEmail = await cli(db.url, ['enqueue', ...bundleFlags('not-an-email')]);
    expect(badEmail.code).toBe(2);
    expect(badEmail.stderr).toContain('--customer-email');
    expectNoStack(badEmail);

    const flags = bundleFlags();
    flags[flags.indexOf('--tickets') + 1] = 'abc';
    const badTickets = await cli(db.url, ['enqueue', ...flags]);
    expect(badTickets.code).toBe(2);
    expect(badTickets.stderr).toContain('--tickets');
    expectNoStack(badTickets);

    const missing = await cli(db.url, ['enqueue', '--customer-email', 'ada@example.com']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--show-id');
    expect(await countRows(db.pool)).toBe(0);
  });
});

describe('integer flags and variables', () => {
  it('take plain decimal whole numbers only, refusing hex, exponents, decimals and blanks alike with the same words (exit 2, nothing written)', async () => {
    const db = await createTestDb();
    const withTickets = (n: string) => {
      const flags = bundleFlags();
      flags[flags.indexOf('--tickets') + 1] = n;
      return ['enqueue', ...flags];
    };
    const refused: Array<[string[], Record<string, string>, string]> = [
      [['enqueue', ...bundleFlags(), '--kind-version', '0x1'], {}, '--kind-version: must be a whole number'],
      [['enqueue', ...bundleFlags(), '--kind-version', '1.0'], {}, '--kind-version: must be a whole number'],
      [['enqueue', ...bundleFlags(), '--kind-version', ''], {}, '--kind-version: must be a whole number'],
      [withTickets('0x2'), {}, '--tickets (number_of_tickets: must be a whole number)'],
      [withTickets('2.0'), {}, '--tickets (number_of_tickets: must be a whole number)'],
      [['list', '--limit', '0x10'], {}, '--limit: must be a whole number'],
      [['list', '--limit', '1e1'], {}, '--limit: must be a whole number'],
      [['worker', '--concurrency', '0x10'], {}, '--concurrency (BUNDLEFLEET_CONCURRENCY): must be a whole number'],
      [['worker'], { BUNDLEFLEET_CONCURRENCY: '1e1' }, '--concurrency (BUNDLEFLEET_CONCURRENCY): must be a whole number'],
      [['supervise', '--max-attempts', '0x5'], {}, '--max-attempts (BUNDLEFLEET_MAX_ATTEMPTS): must be a whole number'],
      [['supervise', '--retention-days', '0x10'], {}, '--retention-days (BUNDLEFLEET_RETENTION_DAYS): must be a number'],
    ];
    for (const [args, env, message] of refused) {
      const run = await cli(db.url, args, { env });
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toBe(`bundlefleet: bad input:\n  ${message}\n`);
    }
    expect(await countRows(db.pool)).toBe(0);
    // Blanks around a number are fine, as they always were.
    const spaced = await cli(db.url, [...withTickets(' 2 '), '--kind-version', ' 1 ', '--json']);
    expect(spaced.code, spaced.stderr).toBe(0);
    expect((await cli(db.url, ['list', '--limit', ' 1 ', '--json'])).code).toBe(0);
  });
});

describe('bundlefleet inspect, list, stats', () => {
  it('shows one bundle, lists and counts them, and refuses bad ids and states', async () => {
    const db = await createTestDb();
    const enqueued = jsonLines((await cli(db.url, ['enqueue', ...bundleFlags(), '--json'])).stdout)[0]!;

    const inspect = await cli(db.url, ['inspect', String(enqueued.vip_bundle_id), '--json']);
    expect(inspect.code).toBe(0);
    const view = JSON.parse(inspect.stdout);
    expect(view).toMatchObject({ vip_bundle_id: enqueued.vip_bundle_id, booking_id: enqueued.booking_id, state: 'pending', attempt: 0 });
    expect(view.steps.map((s: { name: string; status: string }) => [s.name, s.status])).toEqual([
      ['show_tickets', 'pending'], ['inbound_flight', 'pending'], ['return_flight', 'pending'], ['await_ticketing', 'pending'], ['taxi', 'pending'],
    ]);
    expect(view.history).toHaveLength(1);
    expect(view.history[0]).toMatchObject({ to_state: 'pending', reason: 'enqueued' });
    // By booking id too.
    const byBooking = await cli(db.url, ['inspect', String(enqueued.booking_id), '--json']);
    expect(JSON.parse(byBooking.stdout).vip_bundle_id).toBe(enqueued.vip_bundle_id);

    // The text view names the kind version where it names the kind, as --json has it.
    const text = await cli(db.url, ['inspect', String(enqueued.vip_bundle_id)]);
    expect(text.code).toBe(0);
    expect(view.kind_version).toBe(2);
    expect(text.stdout.split('\n')[0]).toBe(`bundle ${enqueued.vip_bundle_id}  (booking ${enqueued.booking_id}, kind vip v2)`);

    const malformed = await cli(db.url, ['inspect', 'not-a-uuid']);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/must be a UUID/);
    const unknown = await cli(db.url, ['inspect', '00000000-0000-4000-8000-000000000000']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no bundle/);
    expectNoStack(unknown);

    const list = await cli(db.url, ['list', '--json']);
    expect(list.code).toBe(0);
    const rows = JSON.parse(list.stdout);
    expect(Array.isArray(rows)).toBe(true);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ vip_bundle_id: enqueued.vip_bundle_id, booking_id: enqueued.booking_id, state: 'pending' });
    expect(Number.isNaN(Date.parse(rows[0].updated_at))).toBe(false);
    expect(JSON.parse((await cli(db.url, ['list', '--state', 'completed', '--json'])).stdout)).toEqual([]);

    const bogus = await cli(db.url, ['list', '--state', 'bogus']);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain('--state');

    const stats = await cli(db.url, ['stats', '--json']);
    expect(stats.code).toBe(0);
    const s = JSON.parse(stats.stdout);
    expect(s.total).toBe(1);
    expect(s.by_state).toMatchObject({ pending: 1, running: 0, completed: 0, failed: 0, compensating: 0, compensated: 0, dead: 0 });
    expect(typeof s.oldest_due_pending_age_seconds).toBe('number');
    // The text says what the age measures (due pending or compensating bundles), and names no
    // unrunnable kind version when there is none.
    const statsText = await cli(db.url, ['stats']);
    expect(statsText.code).toBe(0);
    expect(statsText.stdout).toMatch(/^oldest due \(pending or compensating\): \d+\.\d s$/m);
    expect(statsText.stdout).not.toMatch(/oldest due pending:/);
    expect(statsText.stdout).not.toMatch(/does not carry/);
  });
});

describe('bundlefleet inspect: finished_at', () => {
  it('--json has finished_at (null while unfinished) apart from updated_at, and the text view prints it', async () => {
    const db = await createTestDb();
    const { vip_bundle_id: id } = jsonLines((await cli(db.url, ['enqueue', ...bundleFlags(), '--json'])).stdout)[0]!;
    const pending = await cli(db.url, ['inspect', String(id), '--json']);
    expect(JSON.parse(pending.stdout)).toMatchObject({ finished_at: null });
    expect((await cli(db.url, ['inspect', String(id)])).stdout).not.toMatch(/^finished at/m);

    // Finished an hour before its last change (an ack).
    const finished = '2026-01-02T03:04:05.678Z';
    await db.pool.query(`UPDATE bundles SET state = 'completed', finished_at = $2, updated_at = $2::timestamptz + interval '1 hour' WHERE id = $1`, [id, finished]);
    const view = JSON.parse((await cli(db.url, ['inspect', String(id), '--json'])).stdout);
    expect(view).toMatchObject({ finished_at: finished, updated_at: '2026-01-02T04:04:05.678Z' });
    const text = await cli(db.url, ['inspect', String(id)]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^state completed .*\\nfinished at ${finished}$`, 'm'));
  });
});

describe('bundlefleet against a database that is not ready', () => {
  it('says to run `bundlefleet migrate` on an unmigrated database', async () => {
    const url = await emptyDatabase();
    for (const args of [['list'], ['stats', '--json'], ['enqueue', ...bundleFlags()]]) {
      const run = await cli(url, args);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('run `bundlefleet migrate`');
      expectNoStack(run);
    }
  });

  it('fails fast, naming the database, when nothing listens at DATABASE_URL', async () => {
    const run = await cli('postgres://u:secret@127.0.0.1:1/bundlefleet', ['stats'], { timeoutMs: 15_000 });
    expect(run.ms).toBeLessThan(10_000);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('127.0.0.1:1');
    expect(run.stderr).not.toContain('secret');
    expectNoStack(run);
  });

  it('migrates a fresh database, twice in a row and from several processes at once', async () => {
    const url = await emptyDatabase();
    const first = await cli(url, ['migrate']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/applied/);
    const second = await cli(url, ['migrate', '--json']);
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout)).toEqual({ applied: [] });
    expect((await cli(url, ['stats', '--json'])).code).toBe(0);

    const racing = await emptyDatabase();
    const runs = await Promise.all([1, 2, 3].map(() => cli(racing, ['migrate', '--json'])));
    expect(runs.map((r) => [r.code, r.stderr])).toEqual([[0, ''], [0, ''], [0, '']]);
    // Exactly one of them applied each migration.
    const applied = runs.flatMap((r) => JSON.parse(r.stdout).applied as string[]);
    expect(applied).toEqual(expect.arrayContaining(['001_bundles.sql']));
    expect(new Set(applied).size).toBe(applied.length);
    const enqueue = await cli(racing, ['enqueue', ...bundleFlags(), '--json']);
    expect(enqueue.code).toBe(0);
    const check = new pg.Client({ connectionString: racing });
    await check.connect();
    try {
      const { rows } = await check.query(`SELECT name FROM pgboss.queue ORDER BY name`);
      expect(rows.map((r) => r.name)).toEqual(['BundleStuck_v1', 'VipBundleFailed_v1', 'VipBundleFinalized_v1', 'VipBundleInitialized_v1', 'bundlefleet.signals']);
      const jobs = await check.query(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'VipBundleInitialized_v1'`);
      expect(jobs.rows[0].n).toBe(1);
    } finally {
      await check.end();
    }
  });
});

describe('bundlefleet worker', () => {
  it('refuses --concurrency 0 with exit 2 naming the flag', async () => {
    const db = await createTestDb();
    const run = await cli(db.url, ['worker', '--concurrency', '0']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--concurrency');
    expectNoStack(run);
  });

  it('refuses an unknown kind in --wait-timeout as --provider-concurrency does: exit 2 naming the flag, the name and the accepted kinds', async () => {
    const db = await createTestDb();
    for (const [args, env, message] of [
      [['--wait-timeout', 'bogus=5'], {}, '--wait-timeout (BUNDLEFLEET_WAIT_TIMEOUT): unknown kind with a wait step "bogus" (one of vip)'],
      [[], { BUNDLEFLEET_WAIT_TIMEOUT: 'vip=60,vip=70' }, '--wait-timeout (BUNDLEFLEET_WAIT_TIMEOUT): vip given twice'],
      [['--wait-timeout', 'vip=0x10'], {}, '--wait-timeout (BUNDLEFLEET_WAIT_TIMEOUT): vip: must be a whole number of seconds, like vip=3600 (got "0x10")'],
      [['--provider-concurrency', 'bogus=5'], {}, '--provider-concurrency (BUNDLEFLEET_PROVIDER_CONCURRENCY): unknown provider kind "bogus" (one of tickets, flights, taxis)'],
      [['--provider-rate', 'bogus=5/s'], {}, '--provider-rate (BUNDLEFLEET_PROVIDER_RATE): unknown provider kind "bogus" (one of tickets, flights, taxis)'],
    ] as Array<[string[], Record<string, string>, string]>) {
      const run = await cli(db.url, ['worker', '--providers-url', 'http://127.0.0.1:9', ...args], { env, timeoutMs: 20_000 });
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toBe(`bundlefleet: bad input:\n  ${message}\n`);
      expectNoStack(run);
    }
  });

  it('without providers names --providers-url and every kind left without a URL, in one message', async () => {
    const db = await createTestDb();
    const none = await cli(db.url, ['worker']);
    expect(none.code, none.stderr).toBe(2);
    expect(none.stderr).toBe("bundlefleet: bad input:\n  --providers-url (PROVIDERS_URL): is not set, and tickets (TICKETS_URL), flights (FLIGHTS_URL) and taxis (TAXIS_URL) have no URL of their own: set it to the providers' base URL, e.g. http://127.0.0.1:4010\n");
    const some = await cli(db.url, ['worker'], { env: { TICKETS_URL: 'http://127.0.0.1:9' } });
    expect(some.code, some.stderr).toBe(2);
    expect(some.stderr).toContain('--providers-url (PROVIDERS_URL): is not set, and flights (FLIGHTS_URL) and taxis (TAXIS_URL) have no URL of their own');
    const one = await cli(db.url, ['worker'], { env: { TICKETS_URL: 'http://127.0.0.1:9', FLIGHTS_URL: 'http://127.0.0.1:9' } });
    expect(one.stderr).toContain('--providers-url (PROVIDERS_URL): is not set, and taxis (TAXIS_URL) has no URL of its own');
  });

  it('--metrics-port 0 takes any free port and says which, as serve and dev do', async () => {
    const db = await createTestDb();
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: db.url, PROVIDERS_URL: 'http://127.0.0.1:9', LOG_LEVEL: 'silent' };
    for (const k of Object.keys(env)) if (k.startsWith('BUNDLEFLEET_')) delete env[k];
    const child = spawn(process.execPath, [BIN, 'worker', '--metrics-port', '0'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    onCleanup(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no metrics URL within 20 s: ${stderr}`)), 20_000);
      child.stderr.on('data', () => {
        const m = /metrics on (http:\/\/127\.0\.0\.1:(\d+)\/metrics)/.exec(stderr);
        if (m && m[2] !== '0') clearTimeout(timer), resolve(m[1]!);
      });
      void exited.then((code) => reject(new Error(`worker exited ${code}: ${stderr}`)));
    });
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^# HELP /m);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('bundlefleet supervise: the loop-only settings', () => {
  it('a one-shot pass ignores BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS and BUNDLEFLEET_ORPHAN_CHECK_MS (set fleet-wide for the loop)', async () => {
    const db = await createTestDb();
    for (const env of [{ BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS: 'x' }, { BUNDLEFLEET_ORPHAN_CHECK_MS: '-5' }]) {
      const run = await cli(db.url, ['supervise', '--json'], { env });
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({ ran: true });
    }
  });

  it('with --loop a bad variable is exit 2 naming the flag and the variable', async () => {
    const db = await createTestDb();
    const interval = await cli(db.url, ['supervise', '--loop'], { env: { BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS: 'x' } });
    expect(interval.code, interval.stderr).toBe(2);
    expect(interval.stderr).toContain('--interval-seconds (BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS): must be a number');
    const orphans = await cli(db.url, ['supervise', '--loop'], { env: { BUNDLEFLEET_ORPHAN_CHECK_MS: '-5' } });
    expect(orphans.code, orphans.stderr).toBe(2);
    expect(orphans.stderr).toContain('--orphan-check-ms (BUNDLEFLEET_ORPHAN_CHECK_MS): must be at least 0');
    expectNoStack(orphans);
  });

  it('--loop logs one info line when it starts, with its interval and settings (as worker and serve do), and one when it stops', async () => {
    const db = await createTestDb();
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: db.url, LOG_LEVEL: 'info', LOG_FORMAT: 'json', ALERT_WEBHOOK_URL: 'https://hooks.example.com/T0/secret-token' };
    for (const k of Object.keys(env)) if (k.startsWith('BUNDLEFLEET_')) delete env[k];
    const args = ['supervise', '--loop', '--interval-seconds', '7', '--orphan-check-ms', '500', '--max-attempts', '4'];
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    onCleanup(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start line within 20 s: ${stdout}${stderr}`)), 20_000);
      child.stdout.on('data', (d) => {
        stdout += d;
        const line = jsonLines(stdout.slice(0, stdout.lastIndexOf('\n') + 1)).find((l) => l.msg === 'supervisor loop started');
        if (line) clearTimeout(timer), resolve(line);
      });
      void exited.then((code) => reject(new Error(`supervise --loop exited ${code}: ${stdout}${stderr}`)));
    });
    expect(started).toMatchObject({
      level: 'info', role: 'supervisor', intervalSeconds: 7, orphanCheckMs: 500, maxAttempts: 4, maxUndoAttempts: 10, stuckAfterSeconds: 900,
      backoffBaseSeconds: 2, retentionDays: 30, leaseSeconds: 15, alertWebhook: true,
    });
    // Said once; the webhook's URL (it may hold a secret) never.
    expect(jsonLines(stdout.slice(0, stdout.lastIndexOf('\n') + 1)).filter((l) => l.msg === 'supervisor loop started')).toHaveLength(1);
    // At once: the line says it runs, so it must also stop cleanly from then on.
    child.kill('SIGTERM');
    expect(await exited, stdout + stderr).toBe(0);
    expect(jsonLines(stdout).map((l) => l.msg)).toContain('supervisor loop stopped');
    expect(stdout + stderr).not.toContain('secret-token');
  });

  it('a loop-only flag given without --loop is named in a warning and the one pass still runs; a bad value is exit 2', async () => {
    const db = await createTestDb();
    for (const args of [['--interval-seconds', '5'], ['--orphan-check-ms', '100']]) {
      const run = await cli(db.url, ['supervise', '--json', ...args]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain(`${args[0]} applies only with --loop: running one pass`);
      expect(JSON.parse(run.stdout)).toMatchObject({ ran: true });
    }
    const bad = await cli(db.url, ['supervise', '--interval-seconds', 'x']);
    expect(bad.code, bad.stderr).toBe(2);
    expect(bad.stderr).toContain('--interval-seconds (BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS): must be a number');
    expect(bad.stdout).toBe('');
  });
});
