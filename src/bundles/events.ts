/**
 * Domain events, published through pg-boss as an outbox: each event is inserted as a pg-boss job
 * on the caller's connection, inside the caller's transaction, so it commits or rolls back with
 * the state it announces (invariant 6). Each event has its own queue named after it; consumers
 * `boss.work('VipBundleFinalized_v1', ...)` and must deduplicate on `header.event_id`.
 */
import { randomUUID } from 'node:crypto';
import PgBoss from 'pg-boss';
import type { Queryable } from '../db/pool.js';

export const EVENT_NAMES = ['VipBundleInitialized_v1', 'VipBundleFinalized_v1', 'VipBundleFailed_v1', 'BundleStuck_v1'] as const;
export type EventName = (typeof EVENT_NAMES)[number];

export interface EventEnvelope<T = Record<string, unknown>> {
  header: { event_id: string; event_name: EventName; published_at: string; correlation_id: string };
  data: T;
}

export interface PendingEvent {
  name: EventName;
  correlationId: string;
  data: Record<string, unknown>;
}

export function envelope(e: PendingEvent): EventEnvelope {
  return {
    header: { event_id: randomUUID(), event_name: e.name, published_at: new Date().toISOString(), correlation_id: e.correlationId },
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

/** Inserts the events as pg-boss jobs on `db` (the caller's transaction), one statement per call. */
export async function publishEvents(db: Queryable, events: PendingEvent[]): Promise<void> {
  if (events.length === 0) return;
  const jobs = events.map((e) => ({ name: e.name, data: envelope(e) }));
  await outboxBoss().insert(jobs, { db: wrap(db) });
}

/** Creates pg-boss's schema and one queue per event (idempotent; called by `migrate`). */
export async function installEventQueues(url: string): Promise<void> {
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false, max: 2 });
  boss.on('error', () => {});
  await boss.start();
  try {
    for (const name of EVENT_NAMES) {
      if (!(await boss.getQueue(name))) await boss.createQueue(name, { name, policy: 'standard' } as never).catch(async (err) => {
        // Another migrator created it between our check and our create.
        if (!(await boss.getQueue(name))) throw err;
      });
    }
  } finally {
    await boss.stop({ graceful: false, wait: true });
  }
}
