/**
 * Connection handling: where the database is, a pool with an 'error' listener, and errors that
 * name the database instead of a stack trace.
 */
import pg from 'pg';
import { BadInput } from '../errors.js';
import { rootLogger } from '../logger.js';
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

/** Where the session URL comes from, for messages. */
export const SESSION_URL_SETTING = '--session-database-url (BUNDLEFLEET_SESSION_DATABASE_URL)';

/**
 * The URL of the connections that need a PostgreSQL session of their own: a worker's liveness
 * connection (session advisory lock + LISTEN). BUNDLEFLEET_SESSION_DATABASE_URL when set (PostgreSQL
 * directly or a session-mode pooler), else `databaseUrl`; everything else uses `databaseUrl`, which
 * may then be a transaction-mode pooler. A malformed value is BadInput (exit 2), never echoed.
 */
export function resolveSessionDatabaseUrl(databaseUrl: string, env: NodeJS.ProcessEnv = process.env): string {
  const url = env.BUNDLEFLEET_SESSION_DATABASE_URL?.trim();
  if (!url) return databaseUrl;
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    // reported below
  }
  if (!parsed || !['postgres:', 'postgresql:'].includes(parsed.protocol)) {
    const issue = `${SESSION_URL_SETTING}: must be a postgres:// URL (e.g. postgres://user:password@127.0.0.1:5432/bundlefleet)`;
    throw new BadInput(issue, [issue]);
  }
  if (debugging(env)) process.stderr.write(`bundlefleet: session database: ${describeDatabase(url)} (BUNDLEFLEET_SESSION_DATABASE_URL)\n`);
  return url;
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
    const message = (cause as Error)?.message ?? String(cause);
    super(`cannot reach PostgreSQL at ${describeDatabase(url)}: ${message}${connectionHint(url, message)}`, { cause });
    this.name = 'DatabaseUnavailable';
  }
}

/** What to do about the refusals a newcomer meets first, which pg words for its own authors. */
function connectionHint(url: string, message: string): string {
  const where = (['DATABASE_URL', 'BUNDLEFLEET_SESSION_DATABASE_URL'] as const).find((name) => process.env[name]?.trim() === url) ?? 'the database URL';
  let user = '';
  try {
    user = decodeURIComponent(new URL(url).username);
  } catch {
    // not a URL: describeDatabase already said what it could
  }
  if (/client password must be a string/.test(message)) return ` (the server asks for a password and ${where} gives none for user ${user || '(default)'}: postgres://user:password@host:port/database, or set PGPASSWORD)`;
  if (/password authentication failed/.test(message)) return ` (check the user and password in ${where})`;
  if (/database ".*" does not exist/.test(message)) return ` (create it, e.g. \`createdb\`, or point ${where} at one that exists)`;
  return '';
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
  /**
   * Called when getting a connection took longer than SLOW_ACQUIRE_MS: this pool was full, or a
   * pooler in front of PostgreSQL made a new connection's first statement wait for a server.
   * Default: a warning (at most one a minute per pool) naming the pool size and the sizing rule.
   */
  onSlowAcquire?: (wait: SlowAcquire) => void;
}

export interface SlowAcquire {
  waitedMs: number;
  /** `pool`: this process's pool was full; `server`: a new connection's first statement waited (a pooler's queue). */
  where: 'pool' | 'server';
  max: number;
  waiting: number;
}

/** Longer than this to get a connection is worth a warning. */
export const SLOW_ACQUIRE_MS = 1_000;

export const POOL_SIZING_RULE =
  'a pooler in front of PostgreSQL (PgBouncer default_pool_size / max_db_connections) must have room for every bundlefleet connection: ' +
  'per worker min(concurrency + 2, 20) + 1, + 2 for its signal-queue consumer (pg-boss) and + 2 with --supervise-cron; 3 per supervise --loop, 10 per serve, 4 per CLI command ' +
  '(README: "Running behind a pooler")';

function slowAcquireWarner(): (wait: SlowAcquire) => void {
  let last = 0;
  return (wait) => {
    if (Date.now() - last < 60_000) return;
    last = Date.now();
    const why = wait.where === 'pool' ? `all ${wait.max} connections of this pool were busy (${wait.waiting} more waiting)` : "a new connection's first statement waited for a server";
    rootLogger().warn({ waitedMs: Math.round(wait.waitedMs), poolMax: wait.max, waiting: wait.waiting, where: wait.where }, `waited ${(wait.waitedMs / 1000).toFixed(1)} s for a database connection: ${why}; ${POOL_SIZING_RULE}`);
  };
}

/**
 * While a client is checked out, pg-pool takes its own 'error' listener off it: a connection lost
 * then (PostgreSQL restarting) would be an uncaught 'error' event and kill the process. Whoever
 * holds a client across awaits mutes it (the failing query reports the loss) and calls the
 * returned function before handing it back.
 */
export function muteClientErrors(client: pg.ClientBase): () => void {
  const ignore = () => {};
  client.on('error', ignore);
  return () => void client.removeListener('error', ignore);
}

type ConnectCallback = (err: Error | undefined, client?: pg.PoolClient, release?: (discard?: boolean) => void) => void;

/**
 * Times every checkout. A new connection also makes one round trip before it is handed out:
 * behind PgBouncer in session mode a new client is logged in at once, and its first statement
 * waits until a server connection is free, which is the wait to report.
 */
function watchAcquireTime(pool: pg.Pool, max: number, onSlow: (wait: SlowAcquire) => void): void {
  const connect = pool.connect.bind(pool) as (cb: ConnectCallback) => void;
  const fresh = new WeakSet<pg.PoolClient>();
  pool.on('connect', (client) => fresh.add(client as pg.PoolClient));
  const report = (started: number, where: SlowAcquire['where']) => {
    const waitedMs = performance.now() - started;
    if (waitedMs > SLOW_ACQUIRE_MS) onSlow({ waitedMs, where, max, waiting: pool.waitingCount });
  };
  const timedConnect = (cb: ConnectCallback) => {
    const started = performance.now();
    connect((err, client, release) => {
      if (err || !client) return cb(err, client, release);
      report(started, 'pool');
      if (!fresh.has(client)) return cb(undefined, client, release);
      fresh.delete(client);
      const probed = performance.now();
      // The probe's rejection reports a lost connection to the caller (test/pool-probe.test.ts).
      const unmute = muteClientErrors(client);
      client.query('SELECT 1').then(
        () => (unmute(), report(probed, 'server'), cb(undefined, client, release)),
        (probeErr: Error) => (unmute(), client.release(probeErr), cb(probeErr)),
      );
    });
  };
  // pg-pool's query() checks out through this.connect(cb), so both paths are timed.
  (pool as { connect: unknown }).connect = (cb?: ConnectCallback) => {
    if (cb) return void timedConnect(cb);
    return new Promise<pg.PoolClient>((resolve, reject) => timedConnect((err, client) => (err ? reject(err) : resolve(client!))));
  };
}

export function createPool(url: string, opts: PoolOptions = {}): pg.Pool {
  const max = opts.max ?? 10;
  const pool = new pg.Pool({
    connectionString: url,
    max,
    application_name: opts.applicationName ?? 'bundlefleet',
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
  });
  // An idle client losing its connection (PostgreSQL restarting) emits 'error' on the pool; without
  // a listener that would crash the process. The pool discards the client and makes a new one.
  pool.on('error', (err) => opts.onError?.(err));
  watchAcquireTime(pool, max, opts.onSlowAcquire ?? slowAcquireWarner());
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
  // A connection lost mid-transaction fails the transaction's query; it must not also kill the process.
  const unmute = muteClientErrors(client);
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
    unmute();
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
