/**
 * Domain events, published through pg-boss as an outbox: each event is inserted as pg-boss jobs
 * on the caller's connection, inside the caller's transaction, so it commits or rolls back with
 * the state it announces (invariant 6).
 *
 * Fan-out: every event goes to its own queue (named after it) and to every queue subscribed to
 * it with pg-boss's `boss.subscribe(eventName, queueName)`, one job per queue carrying the same
 * envelope (same `event_id`). So several consumers each get every event on their own queue
 * instead of competing for one, and consumers deduplicate on `header.event_id`.
 *
 * Why not pg-boss's own `publish()`: it reads the subscriptions on its own pool (outside the
 * caller's transaction) and sends with `Promise.allSettled`, so a failed insert would be dropped
 * silently while the state change commits. Here the subscriptions are read and every job is
 * inserted on the caller's connection, in one statement: any failure fails the transaction.
 */
import { randomUUID } from 'node:crypto';
import PgBoss from 'pg-boss';
import type { Queryable } from '../db/pool.js';

export const EVENT_NAMES = ['VipBundleInitialized_v1', 'VipBundleFinalized_v1', 'VipBundleFailed_v1', 'BundleStuck_v1'] as const;
export type EventName = (typeof EVENT_NAMES)[number];

/** `data` of each event, as documented in the README (Events). */
export interface EventData {
  /** A bundle was enqueued (not sent again for a replayed idempotency key). */
  VipBundleInitialized_v1: { vip_bundle_id: string; booking_id: string };
  /** Every step booked. */
  VipBundleFinalized_v1: { vip_bundle_id: string; booking_id: string; outcome: 'completed' };
  /** The bundle ended without its booking: everything undone (`compensated`) or undoing gave up (`dead`). */
  VipBundleFailed_v1: { vip_bundle_id: string; booking_id: string; outcome: 'compensated' | 'dead' };
  /** The supervisor raised an alert about the bundle. */
  BundleStuck_v1: { alert_id: string; vip_bundle_id: string; kind: 'stuck' | 'dead' | 'resets'; message: string };
}

export interface EventEnvelope<T = Record<string, unknown>> {
  /** `traceparent`: the W3C trace context of the span that published it (with tracing on), so consumers join the bundle's trace. */
  header: { event_id: string; event_name: EventName; published_at: string; correlation_id: string; traceparent?: string };
  data: T;
}

export interface PendingEvent {
  name: EventName;
  correlationId: string;
  data: Record<string, unknown>;
  /** Given by the publisher (tracing.ts traceparentOf): events are often written in a batch shared by several bundles' work. */
  traceparent?: string | null;
}

export function envelope(e: PendingEvent): EventEnvelope {
  return {
    header: { event_id: randomUUID(), event_name: e.name, published_at: new Date().toISOString(), correlation_id: e.correlationId, ...(e.traceparent ? { traceparent: e.traceparent } : {}) },
    data: e.data,
  };
}

/** A pg-boss instance used only to build and insert jobs: it never polls, supervises or schedules. */
let outbox: PgBoss | undefined;
function outboxBoss(): PgBoss {
  // `db` is replaced per call; this one is never used because every call passes its own.
  outbox ??= new PgBoss({ db: { executeSql: () => Promise.reject(new Error('outbox needs a connection')) } });
  return outbox;
}

function wrap(db: Queryable) {
  return { executeSql: (text: string, values?: unknown[]) => db.query(text, values as unknown[]) };
}

/** pg-boss's schema (its default; bundlefleet does not change it). */
const BOSS_SCHEMA = 'pgboss';

/** Queues subscribed to these events, besides each event's own queue. */
async function subscribers(db: Queryable, names: EventName[]): Promise<Map<EventName, Set<string>>> {
  const { rows } = await db.query<{ event: EventName; name: string }>(`SELECT event, name FROM ${BOSS_SCHEMA}.subscription WHERE event = ANY($1::text[])`, [names]);
  const queues = new Map<EventName, Set<string>>(names.map((n) => [n, new Set([n])]));
  for (const r of rows) queues.get(r.event)!.add(r.name);
  return queues;
}

/**
 * Inserts the events as pg-boss jobs on `db` (the caller's transaction): one job per event and
 * queue (its own and each subscriber's), read and written in two statements on that connection.
 */
export async function publishEvents(db: Queryable, events: PendingEvent[]): Promise<void> {
  if (events.length === 0) return;
  const queues = await subscribers(db, [...new Set(events.map((e) => e.name))]);
  const jobs = events.flatMap((e) => {
    const data = envelope(e);
    return [...queues.get(e.name)!].map((name) => ({ name, data }));
  });
  await outboxBoss().insert(jobs, { db: wrap(db) });
}

/** Creates pg-boss's schema and one queue per event (idempotent; called by `migrate`). */
/** The pg-boss queue other services send signals on (bundles/signal-queue.ts); installed with the event queues. */
export const SIGNAL_QUEUE = 'bundlefleet.signals';

export async function installEventQueues(url: string): Promise<void> {
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false, max: 2 });
  boss.on('error', () => {});
  await boss.start();
  try {
    // The event queues, and the queue other services send signals on (bundles/signal-queue.ts).
    for (const name of [...EVENT_NAMES, SIGNAL_QUEUE]) {
      if (!(await boss.getQueue(name))) await boss.createQueue(name, { name, policy: 'standard' } as never).catch(async (err) => {
        // Another migrator created it between our check and our create.
        if (!(await boss.getQueue(name))) throw err;
      });
    }
  } finally {
    await boss.stop({ graceful: false, wait: true });
  }
}
