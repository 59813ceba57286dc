/**
 * Forward-only migrations from `sql/NNN_name.sql`, each applied in one transaction under a
 * transaction-scoped advisory lock, recorded in `schema_migrations` (nothing session-scoped: it
 * runs through a transaction-mode pooler too). A second migrator waits for the lock, then
 * finds nothing left to do. pg-boss (our event outbox) installs its own schema under its own lock.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { SchemaMissing } from '../errors.js';
import { installEventQueues } from '../bundles/events.js';
import { muteClientErrors } from './pool.js';

export const SQL_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'sql');

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(dir = SQL_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (file) => ({
      version: Number(file.split('_')[0]),
      name: file,
      sql: await readFile(join(dir, file), 'utf8'),
    })),
  );
}

/** Applies what is missing; returns the names applied by this call. */
export async function migrate(pool: pg.Pool, url: string): Promise<string[]> {
  const migrations = await loadMigrations();
  const applied: string[] = [];
  const client = await pool.connect();
  // Checked out for the whole run: the failing query reports a lost connection.
  const unmute = muteClientErrors(client);
  let released = false;
  try {
    // Under the migration lock too: two migrators racing on CREATE TABLE IF NOT EXISTS collide on
    // the catalog, with 23505, 42P07 or 42710 ("type schema_migrations already exists", seen in a
    // full test run); catching codes missed the last one.
    await client.query('BEGIN');
    try {
      await client.query(`SELECT pg_advisory_xact_lock(hashtextextended('bundlefleet.migrate', 0))`);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    for (const m of migrations) {
      await client.query('BEGIN');
      try {
        await client.query(`SELECT pg_advisory_xact_lock(hashtextextended('bundlefleet.migrate', 0))`);
        const { rowCount } = await client.query('SELECT 1 FROM schema_migrations WHERE version = $1', [m.version]);
        if (!rowCount) {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
          applied.push(m.name);
        }
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
    }
    // pg-boss's create_queue deadlocks when two migrators create the same queue at once (each
    // inserts the queue row, then alters the job table), so the queues are installed under the
    // same lock while pg-boss uses its own connections. The lock is held by a transaction left
    // open on this connection, not by the session: a transaction-mode pooler (PgBouncer
    // pool_mode=transaction) keeps a server connection with its client until the transaction
    // ends, while a session lock would stay behind on a server connection others then use.
    await client.query('BEGIN');
    let installed = false;
    try {
      await client.query(`SELECT pg_advisory_xact_lock(hashtextextended('bundlefleet.migrate', 0))`);
      await installEventQueues(url);
      installed = true;
    } finally {
      // The transaction holds nothing but the lock, so ending it either way (or losing its
      // connection) only releases the lock. A connection that cannot end it is discarded.
      await client.query(installed ? 'COMMIT' : 'ROLLBACK').catch(() => {
        released = true;
        client.release(true);
      });
    }
  } finally {
    unmute();
    if (!released) client.release();
  }
  return applied;
}

/** Throws SchemaMissing ("run bundlefleet migrate") when this build's migrations are not all applied. */
export async function assertSchema(pool: pg.Pool): Promise<void> {
  const migrations = await loadMigrations();
  try {
    // Every file, not just the highest number: branches merged out of order (002, 007, then 003)
    // leave a database at the highest version with a lower one missing.
    const { rows } = await pool.query<{ version: number }>('SELECT version FROM schema_migrations');
    const applied = new Set(rows.map((r) => r.version));
    const missing = migrations.filter((m) => !applied.has(m.version));
    if (missing.length) throw new SchemaMissing(`the bundlefleet schema is out of date (${missing.map((m) => m.name).join(', ')} not applied): run \`bundlefleet migrate\``);
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') throw new SchemaMissing();
    throw err;
  }
}
