/**
 * Named prepared statements for the worker's small batches (issue 12). A named statement is parsed
 * and planned once per connection, and after five runs PostgreSQL may keep its generic plan, which
 * estimates `unnest($1)` at 10 rows whatever the batch: right for a small batch, and 7× slower for
 * a 1,000-row finish (bench/README.md, "named prepared statements"). So a statement is named only
 * for batches of up to GENERIC_PLAN_MAX_ROWS rows, and only on a pool that is a PostgreSQL session
 * (a worker without a session-URL split; its liveness check proved the URL keeps a session):
 * behind a transaction-mode pooler (PgBouncer < 1.21) a statement prepared on one server
 * connection is missing on the next. Everything else stays unnamed. A named statement returns
 * listed columns, never a table's `*`: a migration that adds a column while a worker runs must not
 * fail its cached plans with "cached plan must not change result type".
 */
import type pg from 'pg';
import type { Queryable } from './pool.js';

/** Largest batch sent as a named statement: about three times the generic plan's assumed 10 rows. */
export const GENERIC_PLAN_MAX_ROWS = 32;

const allowed = new WeakSet<object>();

/** Lets `pool` and every connection it makes from now on run named statements. */
export function allowNamedStatements(pool: pg.Pool): void {
  allowed.add(pool);
  pool.on('connect', (client) => allowed.add(client));
}

/** `text` with `values`, named `name` when `db` allows it and the batch has at most GENERIC_PLAN_MAX_ROWS rows. */
export function statement(db: Queryable, name: string, text: string, values: unknown[], rows: number): pg.QueryConfig {
  return allowed.has(db) && rows <= GENERIC_PLAN_MAX_ROWS ? { name, text, values } : { text, values };
}
