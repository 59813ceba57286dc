/**
 * The local tickets record: a unique violation (23505) on its booking id means "already booked",
 * which is success for the show_tickets step, so replaying the step leaves one row.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { enqueueVip, simulatorUrls, startSimulator } from './support/fleet.js';
import { stepIdempotencyKey, vipKind, type StepContext } from '../src/bundles/kinds.js';
import { ProviderClient } from '../src/providers/client.js';

describe('show tickets step', () => {
  it('succeeds when run twice for the same bundle and key, leaving one tickets row', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const { rows: bundle } = await db.pool.query('SELECT payload FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    const step = vipKind.steps[0]!;
    expect(step.name).toBe('show_tickets');
    const ctx: StepContext = {
      bundleId: b!.vip_bundle_id,
      bookingId: b!.booking_id,
      payload: bundle[0].payload,
      idempotencyKey: stepIdempotencyKey(b!.vip_bundle_id, 'show_tickets'),
      providers: new ProviderClient(simulatorUrls(sim)),
      db: db.pool,
    };

    const first = await step.book(ctx);
    const second = await step.book({ ...ctx });
    expect(second.reference).toBe(first.reference);

    const { rows } = await db.pool.query('SELECT booking_id, bundle_id, show_id, number_of_tickets, reference FROM tickets');
    expect(rows).toEqual([
      { booking_id: b!.booking_id, bundle_id: b!.vip_bundle_id, show_id: bundle[0].payload.show_id, number_of_tickets: bundle[0].payload.number_of_tickets, reference: first.reference },
    ]);
    expect(sim.ledger()).toMatchObject([{ kind: 'tickets', idempotency_key: ctx.idempotencyKey, reference: first.reference, status: 'booked', book_calls: 2 }]);
  });

  it('succeeds for two concurrent runs of the same step, leaving one tickets row', async () => {
    const db = await createTestDb();
    const sim = await startSimulator({ latencyMs: 50 });
    const [b] = await enqueueVip(db.pool, 1);
    const { rows: bundle } = await db.pool.query('SELECT payload FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    const ctx: StepContext = {
      bundleId: b!.vip_bundle_id,
      bookingId: b!.booking_id,
      payload: bundle[0].payload,
      idempotencyKey: stepIdempotencyKey(b!.vip_bundle_id, 'show_tickets'),
      providers: new ProviderClient(simulatorUrls(sim)),
      db: db.pool,
    };
    const results = await Promise.all([vipKind.steps[0]!.book(ctx), vipKind.steps[0]!.book({ ...ctx })]);
    expect(results[1].reference).toBe(results[0].reference);
    const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM tickets WHERE booking_id = $1', [b!.booking_id]);
    expect(rows[0]!.n).toBe(1);
  });

  it('still fails on other database errors', async () => {
    const db = await createTestDb();
    const sim = await startSimulator();
    const [b] = await enqueueVip(db.pool, 1);
    const { rows: bundle } = await db.pool.query('SELECT payload FROM bundles WHERE id = $1', [b!.vip_bundle_id]);
    await db.pool.query(`ALTER TABLE tickets ADD CONSTRAINT few_tickets CHECK (number_of_tickets < 0)`);
    await expect(
      vipKind.steps[0]!.book({
        bundleId: b!.vip_bundle_id,
        bookingId: b!.booking_id,
        payload: bundle[0].payload,
        idempotencyKey: stepIdempotencyKey(b!.vip_bundle_id, 'show_tickets'),
        providers: new ProviderClient(simulatorUrls(sim)),
        db: db.pool,
      }),
    ).rejects.toMatchObject({ code: '23514' });
  });
});
