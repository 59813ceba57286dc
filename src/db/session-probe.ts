/**
 * Does a URL give each connection a PostgreSQL session of its own? A worker's liveness connection
 * needs one (its session advisory lock and its LISTEN must stay on one server backend); through a
 * transaction-mode pooler (PgBouncer pool_mode=transaction) every statement goes to whichever
 * server connection is free, so the lock stays behind on a server others then use and LISTEN
 * never wakes anyone. Checked once at start-up, with no lock taken, so nothing can leak.
 *
 * Why two connections: with a quiet pooler, consecutive statements of one client often reach the
 * same idle server connection, so one client alone cannot tell. While a second client holds a
 * transaction open, its server connection is pinned to it: under transaction pooling either it
 * got the first client's server (a pooler that hands out the last freed one: same backend pid on
 * two clients), or the first client's next statement has to go elsewhere (a pooler that hands out
 * the oldest idle one first: a new backend pid). Under a session pooler or directly, each client
 * keeps its own backend and the two pids differ.
 */
import pg from 'pg';
import { SessionRequired } from '../errors.js';
import { DatabaseUnavailable } from './pool.js';
import { allowNamedStatements } from './statements.js';

export interface SessionProbe {
  /** Backend pid of the probing connection's first and second statement, and of the other connection's open transaction. */
  first: number;
  second: number;
  other: number;
}

/** Runs the probe; `session` is whether both connections behaved like sessions of their own. */
export async function probeSession(url: string): Promise<SessionProbe & { session: boolean }> {
  const opts = { connectionString: url, application_name: 'bundlefleet session check', connectionTimeoutMillis: 5_000 };
  const a = new pg.Client(opts);
  const b = new pg.Client(opts);
  a.on('error', () => {});
  b.on('error', () => {});
  try {
    await Promise.all([a.connect(), b.connect()]).catch((err) => {
      throw new DatabaseUnavailable(url, err);
    });
    const pid = async (c: pg.Client) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const first = await pid(a);
    await b.query('BEGIN');
    const other = await pid(b);
    const second = await pid(a);
    await b.query('ROLLBACK');
    return { first, second, other, session: first === second && other !== first };
  } finally {
    await Promise.all([a.end().catch(() => {}), b.end().catch(() => {})]);
  }
}

/** Throws SessionRequired (exit 2) naming `what` when `url` is pooled per transaction. */
export async function assertSessionConnection(url: string, what: string): Promise<void> {
  const probe = await probeSession(url);
  if (!probe.session) throw new SessionRequired(what);
}

/**
 * A long-lived process other than a worker (`serve`, `dev`'s HTTP side) names its small statements
 * as a worker does (db/statements.ts) when its URL keeps a session: a single enqueue then skips
 * parsing and planning (0.3 ms of 2.2 ms, bench/README.md "Scenario 2"). Checked once at start;
 * a probe that fails or finds a transaction pooler leaves every statement unnamed. `provenUrl`: a
 * URL already proven to keep a session (assertSessionConnection); the same URL is not probed again.
 */
export async function allowNamedStatementsOnSession(pool: pg.Pool, url: string, provenUrl?: string): Promise<boolean> {
  const session = url === provenUrl || (await probeSession(url).catch(() => undefined))?.session === true;
  if (session) allowNamedStatements(pool);
  return session;
}
