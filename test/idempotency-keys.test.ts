/**
 * An idempotency key names one request (README, "Which key to use"): the same key with the same
 * payload is a replay (the first bundle's ids, created: false, nothing new); the same key with
 * another payload or active key is refused by enqueueBundles itself, so every surface (CLI, HTTP)
 * shares the rule. The refused batch writes nothing; batches committed before it stay.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { vipPayload } from './support/fleet.js';
import { enqueueBundles } from '../src/bundles/enqueue.js';
import { BadInput, IdempotencyKeyReused } from '../src/errors.js';

const count = async (pool: pg.Pool, from: string) => (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${from}`)).rows[0]!.n;

const refusal = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a refusal'); }, (e: unknown) => e as IdempotencyKeyReused);

describe('idempotency keys in enqueueBundles', () => {
  it('a replay with the same payload (in any key order) returns the first ids; another payload or active key is refused and writes nothing of its batch', async () => {
    const db = await createTestDb();
    const payload = vipPayload();
    const [first] = await enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-1', activeKey: 'doc-1' }], { kindVersion: 1 });
    expect(first!.created).toBe(true);

    const reordered = Object.fromEntries(Object.entries(payload).reverse());
    const [replay] = await enqueueBundles(db.pool, [{ payload: reordered, idempotencyKey: 'k-1', activeKey: 'doc-1' }], { kindVersion: 1 });
    expect(replay).toEqual({ ...first, created: false });

    const other = await refusal(enqueueBundles(db.pool, [{ payload: { ...payload, number_of_tickets: payload.number_of_tickets + 1 }, idempotencyKey: 'k-1', activeKey: 'doc-1' }], { kindVersion: 1 }));
    expect(other).toBeInstanceOf(IdempotencyKeyReused);
    expect(other).toBeInstanceOf(BadInput);
    expect(other).toMatchObject({ idempotencyKey: 'k-1', index: 0, enqueuedBefore: [] });
    expect(other.message).toBe('idempotency_key "k-1" was already used with a different body; use a new key for a new booking');
    // The refusal never names the other request's bundle.
    expect(other.message).not.toContain(first!.vip_bundle_id);

    // The kind version is part of the request too: the same body under another version is another request.
    const otherVersion = await refusal(enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-1', activeKey: 'doc-1' }], { kindVersion: 2 }));
    expect(otherVersion).toBeInstanceOf(IdempotencyKeyReused);

    const otherActiveKey = await refusal(enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-1', activeKey: 'doc-2' }], { kindVersion: 1 }));
    expect(otherActiveKey).toBeInstanceOf(IdempotencyKeyReused);

    // In a batch: the new bundle beside the reused key is not written either; the position is named.
    const inBatch = await refusal(enqueueBundles(db.pool, [{ payload: vipPayload() }, { payload: vipPayload(), idempotencyKey: 'k-1' }], { kindVersion: 1 }));
    expect(inBatch).toMatchObject({ idempotencyKey: 'k-1', index: 1 });
    expect(inBatch.message).toMatch(/^item 2: idempotency_key "k-1" was already used with a different body/);
    // The same key twice in one input with two bodies is refused the same way.
    const twice = await refusal(enqueueBundles(db.pool, [{ payload: vipPayload(), idempotencyKey: 'k-2' }, { payload: vipPayload(), idempotencyKey: 'k-2' }], { kindVersion: 1 }));
    expect(twice).toMatchObject({ idempotencyKey: 'k-2', index: 1 });

    expect(await count(db.pool, 'bundles')).toBe(1);
    expect(await count(db.pool, 'bundle_history')).toBe(0);
    expect(await count(db.pool, `pgboss.job WHERE name = 'VipBundleInitialized_v1'`)).toBe(1);
  });

  it('a reused key in a later batch: the batches before it stay enqueued and are named by the refusal', async () => {
    const db = await createTestDb();
    await enqueueBundles(db.pool, [{ payload: vipPayload(), idempotencyKey: 'k-late' }], { kindVersion: 1 });
    const items = [{ payload: vipPayload() }, { payload: vipPayload() }, { payload: vipPayload() }, { payload: vipPayload(), idempotencyKey: 'k-late' }];
    const err = await refusal(enqueueBundles(db.pool, items, { kindVersion: 1, batchSize: 2 }));
    expect(err).toBeInstanceOf(IdempotencyKeyReused);
    expect(err.index).toBe(3);
    expect(err.enqueuedBefore).toHaveLength(2);
    expect(await count(db.pool, 'bundles')).toBe(3);
    const { rows } = await db.pool.query<{ id: string }>('SELECT id FROM bundles WHERE idempotency_key IS NULL');
    expect(new Set(rows.map((r) => r.id))).toEqual(new Set(err.enqueuedBefore.map((r) => r.vip_bundle_id)));
  });

  it('one input giving a key to two different bodies is refused before anything is written; the same body twice is one bundle', async () => {
    const db = await createTestDb();
    const payload = vipPayload();
    const reordered = Object.fromEntries(Object.entries(payload).reverse());
    const same = await enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-twice' }, { payload: reordered, idempotencyKey: 'k-twice' }], { kindVersion: 1 });
    expect(same[1]).toEqual({ ...same[0], created: false });

    // Batches of one: on the old code the first two were committed before the fourth was refused.
    const items = [{ payload: vipPayload(), idempotencyKey: 'k-in' }, { payload: vipPayload() }, { payload: vipPayload(), idempotencyKey: 'k-in', activeKey: 'doc-x' }];
    const err = await refusal(enqueueBundles(db.pool, items, { kindVersion: 1, batchSize: 1 }));
    expect(err).toBeInstanceOf(IdempotencyKeyReused);
    expect(err.message).toBe('item 3: idempotency_key "k-in" is also given to item 1 with a different body and a different active_key; use a new key for a new booking');
    expect(err.index).toBe(2);
    expect(err.enqueuedBefore).toEqual([]);
    expect(await count(db.pool, 'bundles')).toBe(1);
  });

  it('a refused replay says what differs: the kind version or the active key, not "a different body"', async () => {
    const db = await createTestDb();
    const payload = vipPayload();
    await enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-v', activeKey: 'doc-v' }], { kindVersion: 2 });
    const otherVersion = await refusal(enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-v', activeKey: 'doc-v' }], { kindVersion: 1 }));
    expect(otherVersion.message).toBe('idempotency_key "k-v" was already used with kind version 2 (this request: 1); use a new key for a new booking');
    const otherActiveKey = await refusal(enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-v', activeKey: 'doc-w' }], { kindVersion: 2 }));
    expect(otherActiveKey.message).toBe('idempotency_key "k-v" was already used with a different active_key; use a new key for a new booking');
    const both = await refusal(enqueueBundles(db.pool, [{ payload: vipPayload(), idempotencyKey: 'k-v', activeKey: 'doc-v' }], { kindVersion: 1 }));
    expect(both.message).toBe('idempotency_key "k-v" was already used with a different body and kind version 2 (this request: 1); use a new key for a new booking');
    // Within one input too: only the active key differs.
    const inInput = await refusal(enqueueBundles(db.pool, [{ payload, idempotencyKey: 'k-in2', activeKey: 'a' }, { payload, idempotencyKey: 'k-in2', activeKey: 'b' }], { kindVersion: 2 }));
    expect(inInput.message).toBe('item 2: idempotency_key "k-in2" is also given to item 1 with a different active_key; use a new key for a new booking');
    expect(await count(db.pool, 'bundles')).toBe(1);
  });
});
