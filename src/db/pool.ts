/**
 * Connection handling: where the database is, a pool with an 'error' listener, and errors that
 * name the database instead of a stack trace.
 */
import pg from 'pg';
import { openEmbeddedPostgres } from './embedded.js';

export interface ResolveOptions {
  /**
   * Whether to create the embedded server when there is none (initdb). Only the commands that
   * set a database up (`migrate`, `dev`) do; the others fail saying how to make one.
   */
  create?: boolean;
  cwd?: string;
}

function debugging(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.BUNDLEFLEET_DEBUG) || /^(debug|trace)$/i.test(env.LOG_LEVEL?.trim() ?? '');
}

/**
 * DATABASE_URL when set; otherwise the embedded server of the nearest `.bundlefleet/` (this
 * directory or a parent), started if it was stopped. Creating or starting a server is said on
 * stderr; which database a command uses is said there at LOG_LEVEL=debug (or BUNDLEFLEET_DEBUG).
 */
export async function resolveDatabaseUrl(env: NodeJS.ProcessEnv = process.env, opts: ResolveOptions = {}): Promise<string> {
  const url = env.DATABASE_URL?.trim();
  if (url) {
    if (debugging(env)) process.stderr.write(`bundlefleet: database: ${describeDatabase(url)} (DATABASE_URL)\n`);
    return url;
  }
  const server = await openEmbeddedPostgres({ create: opts.create ?? false }, opts.cwd);
  const where = `127.0.0.1:${server.port}, data in ${server.dataDir}`;
  if (server.action === 'created') process.stderr.write(`bundlefleet: created an embedded PostgreSQL in ${server.home} (${where})\n`);
  else if (server.action === 'started') process.stderr.write(`bundlefleet: started the embedded PostgreSQL of ${server.home} (${where})\n`);
  else if (debugging(env)) process.stderr.write(`bundlefleet: database: embedded PostgreSQL of ${server.home} (${where})\n`);
  return server.url;
}

/** `host:port/db` without credentials, for messages. */
export function describeDatabase(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return '(unparsable DATABASE_URL)';
  }
}

export class DatabaseUnavailable extends Error {
  readonly code = 'DATABASE_UNAVAILABLE';
  constructor(url: string, cause: unknown) {
    super(`cannot reach PostgreSQL at ${describeDatabase(url)}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'DatabaseUnavailable';
  }
}

export interface PoolOptions {
  max?: number;
  applicationName?: string;
  onError?: (err: Error) => void;
  /**
   * Client-side bound on one query, for connections that may go half-open (no FIN, no RST: the
   * server's statement_timeout never fires and TCP keep-alive takes hours). A query past it fails
   * and its connection is discarded by the pool, never reused. Off by default.
   */
  queryTimeoutMs?: number;
}

export function createPool(url: string, opts: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'bundlefleet',
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
  });
  // An idle client losing its connection (PostgreSQL restarting) emits 'error' on the pool; without
  // a listener that would crash the process. The pool discards the client and makes a new one.
  pool.on('error', (err) => opts.onError?.(err));
  return pool;
}

/** Checks that the database answers, failing within seconds with a message naming it. */
export async function checkConnection(pool: pg.Pool, url: string): Promise<void> {
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    throw new DatabaseUnavailable(url, err);
  }
}

export type Queryable = Pick<pg.Pool | pg.PoolClient | pg.Client, 'query'>;

/**
 * Runs `fn` in one transaction on one pooled connection. `settings` are set for this transaction
 * only (SET LOCAL: safe behind a transaction-mode pooler), e.g. a bounded lock wait.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, settings: Record<string, number> = {}): Promise<T> {
  const client = await pool.connect();
  // A checked-out client has no pool 'error' listener: a connection lost mid-transaction (PostgreSQL
  // restarting) would be an uncaught 'error' event and kill the process. The failed query rejects anyway.
  const onError = () => {};
  client.on('error', onError);
  let discard = false;
  try {
    // Names are ours (not input) and values numbers: one round trip for BEGIN and the settings.
    await client.query(['BEGIN', ...Object.entries(settings).map(([name, value]) => `SET LOCAL ${name} = ${Number(value)}`)].join('; '));
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    discard = isConnectionError(err);
    throw err;
  } finally {
    client.removeListener('error', onError);
    // A connection that failed or timed out (it may be half-open) is discarded, never reused.
    client.release(discard || undefined);
  }
}

/** Connection-level failures (server restarting, network) that are worth retrying. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e) return false;
  if (e.code && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', '57P01', '57P02', '57P03', '08006', '08003', '08001', '08000'].includes(e.code)) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable|Query read timeout/i.test(e.message ?? '');
}
