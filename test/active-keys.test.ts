/**
 * At most one active process per business key (issue 11, part 3): the partial unique index
 * refuses a second holder however many enqueues race; a completed bundle frees its key; a
 * compensated or dead one only once an operator acknowledges the failure (CLI `ack`, HTTP, page);
 * a retried dead bundle keeps holding its key.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb, onCleanup, type TestDb } from './support/db.js';
import { cli, expectNoStack, expectRefusal } from './support/cli.js';
import { quietLogger, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { ackBundle, ActiveKeyTaken } from '../src/bundles/active-keys.js';
import { retryBundle, retryBundles } from '../src/supervisor/operator.js';
import { pruneBatch } from '../src/supervisor/retention.js';
import { needsAttention } from '../src/http/attention.js';
import { soldOutId } from '../src/providers/simulator.js';
import { startHttpServer } from '../src/http/server.js';
import { superviseLoop } from '../src/cli/supervise-command.js';
import { BadInput, Conflict } from '../src/errors.js';

const TOKEN = 'active-keys-token';

async function serve(db: TestDb) {
  const server = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
  onCleanup(() => server.close(0));
  return server.url;
}

async function post(base: string, path: string, body?: unknown, token: string | null = TOKEN) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(base + path, { method: 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json().catch(() => null)) as any };
}

const enqueueWithKey = (pool: pg.Pool, activeKey: string, payload: Record<string, unknown> = vipPayload()) =>
  enqueueBundles(pool, [{ payload, activeKey }], { kindVersion: 1 }).then(([r]) => r!);

const setState = (pool: pg.Pool, id: string, state: string) =>
  pool.query(`UPDATE bundles SET state = $2, phase = CASE WHEN $2 IN ('dead', 'compensated') THEN 'undo' ELSE phase END, finished_at = now() WHERE id = $1`, [id, state]);

async function holders(pool: pg.Pool, key: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM bundles WHERE active_key = $1', [key]);
  return rows[0]!.n;
}

function startSupervisor(pool: pg.Pool): void {
  const loop = superviseLoop(pool, { logger: quietLogger(), backoffBaseSeconds: 0.05, maxAttempts: 1 }, 100);
  onCleanup(() => loop.stop());
}

describe('active keys', () => {
  it('ten concurrent enqueues with the same key: exactly one succeeds, the others are refused naming it', async () => {
    const db = await createTestDb();
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => enqueueWithKey(db.pool, 'order-1')));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    const winner = (won[0] as PromiseFulfilledResult<{ vip_bundle_id: string }>).value.vip_bundle_id;
    for (const r of results.filter((r) => r.status === 'rejected')) {
      const err = (r as PromiseRejectedResult).reason;
      expect(err).toBeInstanceOf(ActiveKeyTaken);
      expect(err.holders[0]).toMatchObject({ active_key: 'order-1', vip_bundle_id: winner });
      expect(err.message).toContain(winner);
    }
    expect(await holders(db.pool, 'order-1')).toBe(1);
    // A refused enqueue wrote nothing: no bundle and no history row beside the winner's bundle (an
    // enqueue's timeline entry is its bundle row).
    const { rows } = await db.pool.query(`SELECT (SELECT count(*)::int FROM bundles) AS bundles, (SELECT count(*)::int FROM bundle_history) AS history`);
    expect(rows[0]).toEqual({ bundles: 1, history: 0 });
  });

  it('a batch refused for one held key writes none of its bundles; the same key twice in one input is refused too (before writing)', async () => {
    const db = await createTestDb();
    const first = await enqueueWithKey(db.pool, 'doc-7');
    await expect(enqueueBundles(db.pool, [{ payload: vipPayload() }, { payload: vipPayload(), activeKey: 'doc-7' }])).rejects.toThrow(
      new RegExp(`active_key "doc-7" is held by bundle ${first.vip_bundle_id} \\(pending\\)`),
    );
    // A bundle waiting for external confirmations is unfinished: it holds its key.
    await db.pool.query(`UPDATE bundles SET state = 'waiting' WHERE id = $1`, [first.vip_bundle_id]);
    await expect(enqueueWithKey(db.pool, 'doc-7')).rejects.toThrow(new RegExp(`held by bundle ${first.vip_bundle_id} \\(waiting\\)`));
    await expect(enqueueBundles(db.pool, [{ payload: vipPayload(), activeKey: 'doc-8' }, { payload: vipPayload(), activeKey: 'doc-8' }])).rejects.toThrow(
      /item 2: active_key "doc-8" is also given to item 1/,
    );
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundles`);
    expect(rows[0].n).toBe(1);
  });

  it('the same active key twice in one input is bad input: refused before anything is written, in any batch, naming both items (CLI exit 2)', async () => {
    const db = await createTestDb();
    // Three batches of one: on the old code the first was committed before the third was refused.
    const items = [{ payload: vipPayload(), activeKey: 'doc-9' }, { payload: vipPayload() }, { payload: vipPayload(), activeKey: 'doc-9' }];
    const err = await enqueueBundles(db.pool, items, { batchSize: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInput);
    expect((err as BadInput).message).toBe('item 3: active_key "doc-9" is also given to item 1; an active key allows one bundle at a time');
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM bundles`)).rows[0].n).toBe(0);

    const lines = [vipPayload(), { ...vipPayload(), active_key: 'doc-10' }, vipPayload(), { ...vipPayload(), active_key: 'doc-10' }].map((b) => JSON.stringify(b)).join('\n');
    const r = await cli(db.url, ['enqueue', '-', '--json'], { input: `${lines}\n` });
    expect(r.stderr).toContain('line 4: active_key "doc-10" is also given to line 2');
    expect(expectRefusal(r, ['--json'], { exit: 2, code: 'BAD_INPUT' })?.issues).toEqual(['line 4: active_key "doc-10" is also given to line 2; an active key allows one bundle at a time']);
    expectNoStack(r);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM bundles`)).rows[0].n).toBe(0);

    // A line repeated whole (its idempotency key, body and active key) is a replay, not a second holder.
    const line = { payload: vipPayload(), idempotencyKey: 'k-repeat', activeKey: 'doc-11' };
    const replayed = await enqueueBundles(db.pool, [line, { payload: vipPayload() }, { ...line }], { batchSize: 1 });
    expect(replayed[2]).toEqual({ ...replayed[0], created: false });
    // Items with idempotency keys may be replays, which the database tells: a replay of a bundle
    // that completed (and freed its key) beside a new bundle with that key is accepted, and so is a
    // file of two old lines whose bundles held the key one after the other.
    const [old] = await enqueueBundles(db.pool, [{ payload: line.payload, idempotencyKey: 'k-old', activeKey: 'doc-12' }]);
    await db.pool.query(`UPDATE bundles SET state = 'completed', finished_at = now() WHERE id = $1`, [old!.vip_bundle_id]);
    const [replayedOld, fresh] = await enqueueBundles(db.pool, [{ payload: line.payload, idempotencyKey: 'k-old', activeKey: 'doc-12' }, { payload: vipPayload(), activeKey: 'doc-12' }]);
    expect(replayedOld).toEqual({ ...old, created: false });
    expect(fresh!.created).toBe(true);
    await db.pool.query(`UPDATE bundles SET state = 'completed', finished_at = now() WHERE id = $1`, [fresh!.vip_bundle_id]);
    const [later] = await enqueueBundles(db.pool, [{ payload: vipPayload(3), idempotencyKey: 'k-later', activeKey: 'doc-12' }]);
    const file = await enqueueBundles(db.pool, [{ payload: line.payload, idempotencyKey: 'k-old', activeKey: 'doc-12' }, { payload: vipPayload(3), idempotencyKey: 'k-later', activeKey: 'doc-12' }]);
    expect(file).toEqual([{ ...old, created: false }, { ...later, created: false }]);
    // Two new ones with one key in a batch are still refused by the database, named as such (exit 1), writing nothing of the batch.
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM bundles`)).rows[0].n;
    await expect(enqueueBundles(db.pool, [{ payload: vipPayload(), idempotencyKey: 'k-new-1', activeKey: 'doc-13' }, { payload: vipPayload(), activeKey: 'doc-13' }])).rejects.toThrow(
      /active_key "doc-13": given to more than one bundle of this input/,
    );
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM bundles`)).rows[0].n).toBe(before);

    // The same key and active key with another body is the reused idempotency key, named as such.
    const other = await enqueueBundles(db.pool, [{ ...line, idempotencyKey: 'k-other' }, { ...line, idempotencyKey: 'k-other', payload: vipPayload(2) }]).catch((e: unknown) => e);
    expect((other as Error).message).toBe('item 2: idempotency_key "k-other" is also given to item 1 with a different body; use a new key for a new booking');
  });

  it('a completed bundle frees its key; a compensated one holds it until its failure is acknowledged (real fleet, CLI)', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    startWorker(db.url, sim, { providerRetries: 0 });
    startSupervisor(db.pool);

    const done = await enqueueWithKey(db.pool, 'customer-1');
    await waitFor('completed', async () => (await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [done.vip_bundle_id])).rows[0].state === 'completed');
    const again = await enqueueWithKey(db.pool, 'customer-1', { ...vipPayload(), return_flight_id: soldOutId(11) });
    expect(again.created).toBe(true);
    await waitFor('compensated', async () => (await db.pool.query(`SELECT state FROM bundles WHERE id = $1`, [again.vip_bundle_id])).rows[0].state === 'compensated');

    const p = vipPayload();
    const flags = ['enqueue', '--active-key', 'customer-1', '--customer-email', p.customer_email, '--show-id', p.show_id, '--tickets', String(p.number_of_tickets),
      '--passenger', p.passengers[0]!, '--inbound-flight-id', p.inbound_flight_id, '--return-flight-id', p.return_flight_id];
    const refused = await cli(db.url, flags);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(`active_key "customer-1" is held by bundle ${again.vip_bundle_id}, which ended compensated`);
    expect(refused.stderr).toContain(`bundlefleet ack ${again.vip_bundle_id}`);
    expectNoStack(refused);

    const acked = await cli(db.url, ['ack', again.vip_bundle_id, '--json']);
    expect(acked.code, acked.stderr).toBe(0);
    expect(JSON.parse(acked.stdout)).toMatchObject({ vip_bundle_id: again.vip_bundle_id, state: 'compensated', active_key: 'customer-1' });
    const ackedAgain = await cli(db.url, ['ack', again.booking_id]);
    expect(ackedAgain.code).toBe(0);
    expect(ackedAgain.stdout).toContain('failure acknowledged');

    const accepted = await cli(db.url, [...flags, '--json']);
    expect(accepted.code, accepted.stderr).toBe(0);
    const { vip_bundle_id } = JSON.parse(accepted.stdout);
    const { rows } = await db.pool.query(`SELECT reason FROM bundle_history WHERE bundle_id = $1 ORDER BY id`, [again.vip_bundle_id]);
    expect(rows.filter((r) => r.reason === 'failure acknowledged; active key freed')).toHaveLength(1);
    const inspect = await cli(db.url, ['inspect', again.vip_bundle_id]);
    expect(inspect.stdout).toMatch(/active key "customer-1" \(failure acknowledged at .*; key released\)/);
    expect(vip_bundle_id).not.toBe(again.vip_bundle_id);
  });

  it('a large input refused in its second batch prints the bundles of the first, which stay enqueued', async () => {
    const db = await createTestDb();
    const holder = await enqueueWithKey(db.pool, 'k-big');
    const lines = [...Array.from({ length: 1000 }, () => JSON.stringify(vipPayload())), JSON.stringify({ ...vipPayload(), active_key: 'k-big' })];
    const run = await cli(db.url, ['enqueue', '-', '--json'], { input: `${lines.join('\n')}\n` });
    // One document: the refusal, with the bundles of the first batch in `enqueued`.
    const doc = expectRefusal(run, ['--json'], { exit: 1, code: 'CONFLICT' })!;
    expect(doc.enqueued).toHaveLength(1000);
    expect(doc.error).toContain(`active_key "k-big" is held by bundle ${holder.vip_bundle_id} (pending)`);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toContain(`active_key "k-big" is held by bundle ${holder.vip_bundle_id} (pending)`);
    expect(run.stderr).toContain('the first 1000 bundle(s) of the input were enqueued (listed in "enqueued"), none after them');
    const { rows: first } = await db.pool.query(`SELECT id FROM bundles WHERE active_key IS NULL`);
    expect(new Set(first.map((r) => r.id))).toEqual(new Set((doc.enqueued as Array<{ vip_bundle_id: string }>).map((r) => r.vip_bundle_id)));
    // Without --json the same refusal prints the enqueued bundles, one line each.
    const text = await cli(db.url, ['enqueue', '-'], { input: `${lines.join('\n')}\n` });
    expect(text.code).toBe(1);
    expect(text.stdout.trim().split('\n')).toHaveLength(1000);
    expect(text.stderr).toContain('the first 1000 bundle(s) of the input were enqueued (printed), none after them');
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundles`);
    expect(rows[0].n).toBe(2001);
  });

  it('ack refuses a completed or unfinished bundle with a reason, and bad input with exit 2', async () => {
    const db = await createTestDb();
    const pending = await enqueueWithKey(db.pool, 'k-pending');
    const completed = await enqueueWithKey(db.pool, 'k-completed');
    await setState(db.pool, completed.vip_bundle_id, 'completed');

    const onCompleted = await cli(db.url, ['ack', completed.vip_bundle_id]);
    expect(onCompleted.code).toBe(1);
    expect(onCompleted.stderr).toContain('it completed, so there is no failure to acknowledge');
    const onPending = await cli(db.url, ['ack', pending.vip_bundle_id]);
    expect(onPending.code).toBe(1);
    expect(onPending.stderr).toContain('it is pending, not finished; only compensated or dead bundles');
    const missing = await cli(db.url, ['ack', '3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no bundle with');
    const bad = await cli(db.url, ['ack', 'nope']);
    expect(bad.code).toBe(2);
    expectNoStack(bad);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundles WHERE failure_acked_at IS NOT NULL`);
    expect(rows[0].n).toBe(0);
  });

  it('--active-key is bounded like other input: exit 2 naming the flag, nothing written', async () => {
    const db = await createTestDb();
    const p = vipPayload();
    const base = ['enqueue', '--customer-email', p.customer_email, '--show-id', p.show_id, '--tickets', '1', '--passenger', 'A B',
      '--inbound-flight-id', p.inbound_flight_id, '--return-flight-id', p.return_flight_id];
    const long = await cli(db.url, [...base, '--active-key', 'x'.repeat(201)]);
    expect(long.code).toBe(2);
    expect(long.stderr).toContain('--active-key (active_key: must be at most 200 characters)');
    const empty = await cli(db.url, [...base, '--active-key', '  ']);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('active_key: must not be empty');
    const ndjson = await cli(db.url, ['enqueue', '-'], { input: `${JSON.stringify({ ...p, active_key: 42 })}\n` });
    expect(ndjson.code).toBe(2);
    expect(ndjson.stderr).toContain('active_key: must be a string');
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM bundles`);
    expect(rows[0].n).toBe(0);
  });

  it('a retried dead bundle keeps its key; one retried after its failure was acknowledged takes it back unless another bundle holds it', async () => {
    const db = await createTestDb();
    const dead = await enqueueWithKey(db.pool, 'k-dead');
    await setState(db.pool, dead.vip_bundle_id, 'dead');
    await expect(enqueueWithKey(db.pool, 'k-dead')).rejects.toThrow(/which ended dead/);
    await retryBundle(db.pool, dead.vip_bundle_id);
    await expect(enqueueWithKey(db.pool, 'k-dead')).rejects.toThrow(new RegExp(`held by bundle ${dead.vip_bundle_id} \\(compensating\\)`));

    await setState(db.pool, dead.vip_bundle_id, 'dead');
    await ackBundle(db.pool, dead.vip_bundle_id);
    const successor = await enqueueWithKey(db.pool, 'k-dead');
    const err = await retryBundle(db.pool, dead.vip_bundle_id).catch((e) => e);
    expect(err).toBeInstanceOf(Conflict);
    expect(err.message).toContain(`its active key "k-dead" is now held by bundle ${successor.vip_bundle_id}`);
    expect(await retryBundles(db.pool, [dead.vip_bundle_id])).toEqual([]);

    // Once the successor completes, the acknowledged bundle may be retried: it holds the key again, and a new failure needs a new ack.
    await setState(db.pool, successor.vip_bundle_id, 'completed');
    await retryBundle(db.pool, dead.vip_bundle_id);
    const { rows } = await db.pool.query(`SELECT failure_acked_at FROM bundles WHERE id = $1`, [dead.vip_bundle_id]);
    expect(rows[0].failure_acked_at).toBeNull();
    await expect(enqueueWithKey(db.pool, 'k-dead')).rejects.toThrow(ActiveKeyTaken);
  });

  it('over HTTP: 409 naming the holder, replays still answer 200, ack is token-protected and frees the key', async () => {
    const db = await createTestDb();
    const base = await serve(db);
    const body = { ...vipPayload(), active_key: 'doc-42' };

    const racing = await Promise.all(Array.from({ length: 10 }, () => post(base, '/book-vip-bundle', { ...body, customer_email: `r${Math.random()}@example.com` })));
    expect(racing.filter((r) => r.status === 201)).toHaveLength(1);
    const holder = racing.find((r) => r.status === 201)!.body.vip_bundle_id;
    for (const r of racing.filter((r) => r.status !== 201)) {
      expect(r.status).toBe(409);
      expect(r.body).toMatchObject({ active_key: 'doc-42', vip_bundle_id: holder, state: 'pending' });
      expect(r.body.error).toContain(holder);
    }

    const keyed = { ...vipPayload(), active_key: 'doc-43', idempotency_key: 'req-1' };
    expect((await post(base, '/book-vip-bundle', keyed)).status).toBe(201);
    expect((await post(base, '/book-vip-bundle', keyed)).status).toBe(200);
    expect((await post(base, '/book-vip-bundle', { ...keyed, active_key: 'doc-44' })).status).toBe(422);

    const long = await post(base, '/book-vip-bundle', { ...vipPayload(), active_key: 'k'.repeat(201) });
    expect(long.status).toBe(400);
    expect(long.body.issues).toContain('active_key: must be at most 200 characters');

    await setState(db.pool, holder, 'compensated');
    expect((await post(base, `/bundles/${holder}/ack`, undefined, null)).status).toBe(401);
    expect((await post(base, '/book-vip-bundle', body)).status).toBe(409);
    const acked = await post(base, `/bundles/${holder}/ack`);
    expect(acked.status).toBe(200);
    expect(acked.body).toMatchObject({ vip_bundle_id: holder, state: 'compensated', active_key: 'doc-42' });
    expect((await post(base, '/book-vip-bundle', body)).status).toBe(201);

    const pending = (await post(base, '/book-vip-bundle', vipPayload())).body.vip_bundle_id;
    const refused = await post(base, `/bundles/${pending}/ack`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toContain('it is pending, not finished');
    const view = await fetch(`${base}/bundles/${holder}`).then((r) => r.json());
    expect(view).toMatchObject({ active_key: 'doc-42' });
    expect(view.failure_acked_at).toEqual(acked.body.failure_acked_at);
  });

  it('an acknowledged dead bundle leaves "needs attention" and its alerts are acknowledged', async () => {
    const db = await createTestDb();
    const b = await enqueueWithKey(db.pool, 'k-att');
    await setState(db.pool, b.vip_bundle_id, 'dead');
    await db.pool.query(`INSERT INTO alerts (bundle_id, kind, message) VALUES ($1, 'dead', 'undoing was exhausted')`, [b.vip_bundle_id]);
    expect((await needsAttention(db.pool)).counts.dead).toBe(1);
    await ackBundle(db.pool, b.vip_bundle_id);
    expect((await needsAttention(db.pool)).counts.dead).toBe(0);
    const { rows } = await db.pool.query(`SELECT acked_at FROM alerts WHERE bundle_id = $1`, [b.vip_bundle_id]);
    expect(rows[0].acked_at).not.toBeNull();
  });

  it('retention keeps a compensated bundle that holds its key until the failure is acknowledged', async () => {
    const db = await createTestDb();
    const held = await enqueueWithKey(db.pool, 'k-ret');
    const plain = (await enqueueBundles(db.pool, [{ payload: vipPayload() }]))[0]!;
    for (const id of [held.vip_bundle_id, plain.vip_bundle_id]) await setState(db.pool, id, 'compensated');
    await db.pool.query(`UPDATE bundles SET finished_at = now() - interval '2 days'`);
    await pruneBatch(db.pool, 3600, 100);
    const left = async () => (await db.pool.query<{ id: string }>('SELECT id FROM bundles')).rows.map((r) => r.id);
    expect(await left()).toEqual([held.vip_bundle_id]);
    await ackBundle(db.pool, held.vip_bundle_id);
    await pruneBatch(db.pool, 3600, 100);
    expect(await left()).toEqual([]);
  });
});
