/**
 * A worker's liveness: one dedicated connection that holds a session advisory lock keyed by the
 * worker's id (the value it writes to `locked_by`). If the process dies, PostgreSQL drops the
 * connection and the lock with it, so the supervisor can tell "owner gone" from "owner slow" by
 * looking in pg_locks. The same connection LISTENs for new work.
 *
 * If the connection drops while the process lives, the supervisor may reset this worker's
 * bundles; fencing makes the old agents' writes fail harmlessly, and the next claim first takes
 * a new id and a new lock. This connection must not go through a transaction-mode pooler
 * (PgBouncer pool_mode=transaction): session locks and LISTEN would not stay on one server session.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { DUE_CHANNEL } from '../bundles/enqueue.js';

/** The advisory-lock key of a worker, the same expression the supervisor uses. */
export const WORKER_LOCK_KEY_SQL = `hashtextextended('bundlefleet.worker.' || $1, 0)`;

export class WorkerLiveness extends EventEmitter {
  private client: pg.Client | undefined;
  private currentId: string | undefined;
  private generation = 0;

  constructor(private readonly url: string, private readonly name: string) {
    super();
  }

  /** The id to claim under, or undefined while no live lock is held. */
  get workerId(): string | undefined {
    return this.client ? this.currentId : undefined;
  }

  /** Returns a worker id backed by a held lock, taking a new id and lock after a lost connection. */
  async ensure(): Promise<string> {
    if (this.client && this.currentId) return this.currentId;
    const id = `${this.name}.${(++this.generation).toString(36)}.${randomUUID().slice(0, 8)}`;
    const client = new pg.Client({ connectionString: this.url, application_name: `bundlefleet worker ${id}`, keepAlive: true, connectionTimeoutMillis: 5_000 });
    const lost = (err?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      this.emit('lost', err);
      client.end().catch(() => {});
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', () => this.emit('due'));
    await client.connect();
    try {
      await client.query(`SELECT pg_advisory_lock(${WORKER_LOCK_KEY_SQL})`, [id]);
      await client.query(`LISTEN ${DUE_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    this.client = client;
    this.currentId = id;
    return id;
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }
}
