/**
 * Domain events, published through pg-boss as an outbox: each event is inserted as pg-boss jobs
 * by the caller's own statement or transaction, so it commits or rolls back with the state it
 * announces (invariant 6).
 *
 * Fan-out: every event goes to its own queue (named after it) and to every queue subscribed to
 * it with pg-boss's `boss.subscribe(eventName, queueName)`, one job per queue carrying the same
 * envelope (same `event_id`). So several consumers each get every event on their own queue
 * instead of competing for one, and consumers deduplicate on `header.event_id`.
 *
 * Why not pg-boss's own `publish()`: it reads the subscriptions on its own pool (outside the
 * caller's transaction) and sends with `Promise.allSettled`, so a failed insert would be dropped
 * silently while the state change commits. Here the subscriptions are read and every job is
 * inserted in the caller's statement: any failure fails it.
 *
 * Why not pg-boss's `insert()` either (used until stop 20): the jobs are written by a CTE that
 * the statement changing the state carries (eventJobsCte), so an enqueue with events and a
 * worker's finish are each one autocommitted statement instead of a transaction of five round
 * trips (BEGIN, the change, the subscriptions, pg-boss's insert, COMMIT), and the envelopes are
 * built by the server instead of here, per event. Measured in bench/README.md ("Events in the
 * statement"). The job rows are the ones `insert()` writes: test/events.test.ts compares them
 * column by column, so a pg-boss upgrade that changes its defaults fails there.
 */
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
  BundleStuck_v1: { alert_id: string; vip_bundle_id: string; kind: 'stuck' | 'dead' | 'resets' | 'unreconciled'; message: string };
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

/** pg-boss's schema (its default; bundlefleet does not change it). */
const BOSS_SCHEMA = 'pgboss';

/**
 * Data-modifying CTEs (to follow `WITH …,` in the caller's statement) that publish one event per
 * row of `source`, a query yielding `event_name text, correlation_id, data jsonb, traceparent
 * text`. Rows with a NULL event_name publish nothing. The envelope (EventEnvelope) is built here:
 * a new event id, `published_at` the transaction's start in UTC with milliseconds, as JavaScript's
 * toISOString() writes it, and `traceparent` only when given.
 *
 * Each job's columns are what pg-boss 10's `insert()` writes for a job given no options, from a
 * PgBoss made without config (plans.js insertJobs): the queue's settings, else pg-boss's defaults;
 * a queue that does not exist gets nothing, and a conflict is skipped, as there. Each job gets
 * its own id, as there: the copies of one event share only the envelope's event_id (pg-boss keys
 * jobs on (name, id), but its expiry sweep tells retried jobs apart by id alone).
 */
export function eventJobsCte(source: string): string {
  return `
event_rows AS (
  SELECT s.event_name, s.correlation_id, s.data, s.traceparent, gen_random_uuid() AS event_id
  FROM (${source}) s WHERE s.event_name IS NOT NULL
), event_targets AS (
  -- Each event's own queue and every queue subscribed to it.
  SELECT n.event_name, n.event_name AS queue FROM (SELECT DISTINCT event_name FROM event_rows) n
  UNION
  SELECT sub.event, sub.name FROM ${BOSS_SCHEMA}.subscription sub WHERE sub.event IN (SELECT event_name FROM event_rows)
), event_queues AS (
  SELECT t.event_name, q.name, q.policy, q.dead_letter,
         coalesce(q.expire_seconds * interval '1s', interval '15 minutes') AS expire_in,
         now() + CAST(coalesce((q.retention_minutes * 60)::text, '14 days') AS interval) AS keep_until,
         coalesce(q.retry_limit, 2) AS retry_limit,
         CASE WHEN coalesce(q.retry_backoff, false) THEN greatest(q.retry_delay, 1) ELSE coalesce(q.retry_delay, 0) END AS retry_delay,
         coalesce(q.retry_backoff, false) AS retry_backoff,
         to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS published_at
  FROM event_targets t JOIN ${BOSS_SCHEMA}.queue q ON q.name = t.queue
), event_jobs AS (
  INSERT INTO ${BOSS_SCHEMA}.job (id, name, data, priority, start_after, singleton_key, singleton_on, dead_letter, expire_in, keep_until, retry_limit, retry_delay, retry_backoff, policy)
  SELECT gen_random_uuid(), q.name,
         jsonb_build_object(
           'header', jsonb_strip_nulls(jsonb_build_object('event_id', e.event_id, 'event_name', e.event_name, 'published_at', q.published_at, 'correlation_id', e.correlation_id, 'traceparent', e.traceparent)),
           'data', e.data),
         0, now(), NULL, NULL, q.dead_letter, q.expire_in, q.keep_until, q.retry_limit, q.retry_delay, q.retry_backoff, q.policy
  FROM event_rows e JOIN event_queues q ON q.event_name = e.event_name
  ON CONFLICT DO NOTHING
)`;
}

const publishSql = `
WITH ${eventJobsCte(`SELECT * FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), jsonb_array_elements($3::jsonb), unnest($4::text[])) AS t(event_name, correlation_id, data, traceparent)`)}
SELECT 1`;

/** Inserts the events as pg-boss jobs on `db`, in one statement: inside the caller's transaction when it has one. */
export async function publishEvents(db: Queryable, events: PendingEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(publishSql, [
    events.map((e) => e.name),
    events.map((e) => e.correlationId),
    `[${events.map((e) => JSON.stringify(e.data)).join(',')}]`,
    events.map((e) => e.traceparent || null),
  ]);
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
