/**
 * The local tickets record (invariant 8): written in the same fenced statement as the show_tickets
 * step's outcome, removed in the same fenced statement as its cancellation. A replay finds the row
 * already there (success); a stale attempt can neither write nor remove it.
 */
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { createTestDb } from './support/db.js';
import { enqueueVip, claimAs } from './support/fleet.js';
import { recordBooked, recordCancelled, recordIntent, type Fence } from '../src/agents/fenced-writes.js';
import { stepIdempotencyKey } from '../src/bundles/kinds.js';

async function claimedFence(pool: pg.Pool, actor = 'w'): Promise<{ fence: Fence; key: string; payload: Record<string, unknown>; bookingId: string }> {
  const [b] = await claimAs(pool, { workerId: actor, limit: 1, leaseSeconds: 60 });
  const fence: Fence = { bundleId: b!.id, attempt: b!.attempt, actor, leaseSeconds: 60 };
  const key = stepIdempotencyKey(b!.id, 'show_tickets');
  expect(await recordIntent(pool, fence, 0, 'show_tickets', key)).toBe(key);
  return { fence, key, payload: b!.payload, bookingId: b!.booking_id };
}

const ticketsOf = async (pool: pg.Pool, bundleId: string) =>
  (await pool.query('SELECT booking_id, bundle_id, show_id, number_of_tickets, reference FROM tickets WHERE bundle_id = $1', [bundleId])).rows;

describe('local tickets record', () => {
  it('is written with the booked outcome, once, however often the outcome is replayed', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    const { fence, key, payload, bookingId } = await claimedFence(db.pool);
    expect(await recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets')).toBe(true);
    expect(await recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets')).toBe(true);
    expect(await ticketsOf(db.pool, fence.bundleId)).toEqual([
      { booking_id: bookingId, bundle_id: fence.bundleId, show_id: payload.show_id, number_of_tickets: payload.number_of_tickets, reference: 'TKT-1' },
    ]);
  });

  it('two concurrent booked writes of the same step leave one row', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    const { fence, key } = await claimedFence(db.pool);
    const results = await Promise.all([
      recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets'),
      recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets'),
    ]);
    expect(results).toEqual([true, true]);
    expect(await ticketsOf(db.pool, fence.bundleId)).toHaveLength(1);
  });

  it('is removed with the cancellation, and a stale attempt can neither write nor remove it', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    const { fence, key } = await claimedFence(db.pool, 'old');
    // The old attempt is superseded before its reply arrives: its booked write writes nothing.
    await db.pool.query(`UPDATE bundles SET state = 'compensating', locked_by = NULL WHERE id = $1`, [fence.bundleId]);
    expect(await recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets')).toBe(false);
    expect(await ticketsOf(db.pool, fence.bundleId)).toEqual([]);

    const [undo] = await claimAs(db.pool, { workerId: 'undoer', limit: 1, leaseSeconds: 60 });
    const undoFence: Fence = { bundleId: undo!.id, attempt: undo!.attempt, actor: 'undoer', leaseSeconds: 60 };
    await db.pool.query(`INSERT INTO tickets (booking_id, bundle_id, show_id, number_of_tickets, reference) SELECT booking_id, id, 'x', 1, 'TKT-1' FROM bundles WHERE id = $1`, [fence.bundleId]);
    expect(await recordCancelled(db.pool, fence, 0, 'show_tickets', { local: 'tickets' })).toBe(false);
    expect(await ticketsOf(db.pool, fence.bundleId)).toHaveLength(1);
    expect(await recordCancelled(db.pool, undoFence, 0, 'show_tickets', { local: 'tickets' })).toBe(true);
    expect(await ticketsOf(db.pool, fence.bundleId)).toEqual([]);
  });

  it('fails the write on any other database error, writing nothing', async () => {
    const db = await createTestDb();
    await enqueueVip(db.pool, 1);
    const { fence, key } = await claimedFence(db.pool);
    await db.pool.query(`ALTER TABLE tickets ADD CONSTRAINT few_tickets CHECK (number_of_tickets < 0)`);
    await expect(recordBooked(db.pool, fence, 0, 'show_tickets', key, 'TKT-1', 'tickets')).rejects.toMatchObject({ code: '23514' });
    const { rows } = await db.pool.query('SELECT status FROM steps WHERE bundle_id = $1', [fence.bundleId]);
    expect(rows).toEqual([{ status: 'booking' }]);
  });
});
