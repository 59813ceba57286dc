/**
 * A worker's liveness: one dedicated connection that holds a session advisory lock keyed by the
 * worker's id (the value it writes to `locked_by`). If the process dies, PostgreSQL drops the
 * connection and the lock with it, so the supervisor can tell "owner gone" from "owner slow" by
 * looking in pg_locks. The same connection LISTENs for new work.
 *
 * The connection is heartbeated: every `heartbeatMs` it asks PostgreSQL whether its own backend
 * (pg_backend_pid()) still holds the lock, with a timeout. A half-open socket (no FIN, no RST:
 * TCP keep-alive notices it after hours, and a paused peer's kernel even answers keep-alives),
 * a terminated backend, or a pooler that recycled the server connection is noticed within
 * heartbeatMs + heartbeatTimeoutMs; the worker then drops the id, aborts that id's agents and
 * takes a new id and lock before it claims again. The claim itself also checks that the lock is
 * held (scheduler/claim.ts), so no claim succeeds under a dead id even between heartbeats.
 *
 * This connection needs a server session of its own: under a transaction-mode pooler (PgBouncer
 * pool_mode=transaction) the lock would not stay with it. That is detected on connect (the lock is
 * not held by the backend that answers the next statement) and refused with SessionRequired.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { DUE_CHANNEL } from '../bundles/enqueue.js';
import { grantedAdvisoryLocks, lockRowKey, workerLockKey } from '../bundles/worker-locks.js';
import { SessionRequired } from '../errors.js';

/** The advisory-lock key of a worker, the same expression the supervisor uses. */
export const WORKER_LOCK_KEY_SQL = workerLockKey('$1');

const heldByMeSql = `SELECT pg_backend_pid() AS pid,
  EXISTS (SELECT 1 FROM ${grantedAdvisoryLocks('l')} AND l.pid = pg_backend_pid() AND ${lockRowKey('l')} = ${WORKER_LOCK_KEY_SQL}) AS held`;

function destroySocket(client: pg.Client): void {
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

export interface LivenessOptions {
  /** How often the lock is verified. Default 2000 ms. */
  heartbeatMs?: number;
  /** A verification that takes longer means the connection is gone. Default 3000 ms. */
  heartbeatTimeoutMs?: number;
}

export interface LostLiveness {
  workerId: string;
  /** The backend that held the lock, if known: it may still hold it (half-open), until terminated. */
  backendPid: number | undefined;
  reason: string;
}

export class WorkerLiveness extends EventEmitter {
  private client: pg.Client | undefined;
  private currentId: string | undefined;
  private backendPid: number | undefined;
  private generation = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly heartbeatMs: number;
  private readonly heartbeatTimeoutMs: number;

  constructor(private readonly url: string, private readonly name: string, opts: LivenessOptions = {}) {
    super();
    this.heartbeatMs = opts.heartbeatMs ?? 2_000;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 3_000;
  }

  /** The id to claim under, or undefined while no live lock is held. */
  get workerId(): string | undefined {
    return this.client ? this.currentId : undefined;
  }

  /** Returns a worker id backed by a held lock, taking a new id and lock after a lost connection. */
  async ensure(): Promise<string> {
    if (this.client && this.currentId) return this.currentId;
    const id = `${this.name}.${(++this.generation).toString(36)}.${randomUUID().slice(0, 8)}`;
    const client = new pg.Client({
      connectionString: this.url,
      application_name: `bundlefleet worker ${id}`,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 5_000,
    });
    client.on('error', (err) => this.lose(client, `connection error: ${err.message}`));
    client.on('end', () => this.lose(client, 'connection ended'));
    client.on('notification', () => this.emit('due'));
    await client.connect();
    try {
      await client.query(`SELECT pg_advisory_lock(${WORKER_LOCK_KEY_SQL})`, [id]);
      // The next statement must see the lock on its own backend: a transaction-mode pooler hands
      // each statement to whichever server connection is free, and the lock stays behind.
      const { rows } = await client.query<{ pid: number; held: boolean }>(heldByMeSql, [id]);
      if (!rows[0]?.held) throw new SessionRequired('the worker liveness connection');
      await client.query(`LISTEN ${DUE_CHANNEL}`);
      this.backendPid = rows[0].pid;
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => {});
      throw err;
    }
    this.client = client;
    this.currentId = id;
    this.startHeartbeat(client, id);
    return id;
  }

  private startHeartbeat(client: pg.Client, id: string): void {
    clearInterval(this.heartbeat);
    const pid = this.backendPid;
    let inFlight = false;
    this.heartbeat = setInterval(() => {
      if (inFlight || this.client !== client) return;
      inFlight = true;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.heartbeatTimeoutMs} ms`)), this.heartbeatTimeoutMs);
      });
      Promise.race([client.query<{ pid: number; held: boolean }>(heldByMeSql, [id]), timeout])
        .then(({ rows }) => {
          if (rows[0]?.pid !== pid) this.lose(client, `statements now reach backend ${rows[0]?.pid}, not ${pid} (a pooler recycled the connection)`);
          else if (!rows[0]?.held) this.lose(client, 'the lock is no longer held by this connection');
        })
        .catch((err: Error) => this.lose(client, `heartbeat failed: ${err.message}`))
        .finally(() => {
          clearTimeout(timer);
          inFlight = false;
        });
    }, this.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Drops `client` as this worker's liveness; emits 'lost' once per id. */
  private lose(client: pg.Client, reason: string): void {
    if (this.client !== client) return;
    const lost: LostLiveness = { workerId: this.currentId!, backendPid: this.backendPid, reason };
    this.client = undefined;
    clearInterval(this.heartbeat);
    this.emit('lost', lost);
    // end() would wait for a goodbye a half-open peer never sends: drop the socket.
    destroySocket(client);
    client.end().catch(() => {});
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    clearInterval(this.heartbeat);
    if (!client) return;
    // A goodbye that gets no answer within a second (half-open socket) is not waited for.
    const ended = await Promise.race([client.end().then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1_000).unref())]);
    if (!ended) destroySocket(client);
  }
}
