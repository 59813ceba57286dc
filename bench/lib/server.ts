/**
 * The PostgreSQL every system runs on: DATABASE_URL when set, else an embedded server of its own
 * under bench/results/tmp/pg (default settings: fsync and synchronous_commit on). Each system and
 * each repetition gets a fresh database, so every run starts from a fresh schema.
 */
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ensureEmbeddedPostgres, stopEmbeddedPostgres } from '../../src/db/embedded.js';

export const TMP_DIR = fileURLToPath(new URL('../results/tmp/', import.meta.url));
const EMBEDDED_HOME = `${TMP_DIR}pg`;

export interface BenchServer {
  adminUrl: string;
  embedded: boolean;
  /** Creates a fresh database and returns its URL. */
  createDatabase(prefix: string): Promise<string>;
  dropDatabase(url: string): Promise<void>;
  info(): Promise<Record<string, string>>;
  close(): Promise<void>;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * `statements`: load pg_stat_statements (the embedded binaries ship it) in an embedded server of
 * its own (bench/results/tmp/pg-stat), for the profile and before/after runs — not for the table.
 */
export async function startServer(opts: { statements?: boolean } = {}): Promise<BenchServer> {
  const fromEnv = process.env.DATABASE_URL?.trim();
  const home = opts.statements ? `${TMP_DIR}pg-stat` : EMBEDDED_HOME;
  const settings = opts.statements ? { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'top', 'pg_stat_statements.track_planning': 'on' } : undefined;
  const adminUrl = fromEnv || (await ensureEmbeddedPostgres({ home, settings }));
  let counter = 0;
  const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
  return {
    adminUrl,
    embedded: !fromEnv,
    async createDatabase(prefix) {
      const name = `bench_${prefix}_${tag}_${++counter}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
      await admin(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`));
      return withDatabase(adminUrl, name);
    },
    async dropDatabase(url) {
      const name = new URL(url).pathname.slice(1);
      await admin(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch(() => {});
    },
    async info() {
      return admin(adminUrl, async (c) => {
        const names = ['server_version', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers', 'work_mem', 'max_connections', 'data_checksums', 'autovacuum', 'max_wal_size', 'jit'];
        const { rows } = await c.query<{ name: string; setting: string }>(
          `SELECT name, current_setting(name) AS setting FROM unnest($1::text[]) AS name`,
          [names],
        );
        const version = (await c.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v;
        return { version, ...Object.fromEntries(rows.map((r) => [r.name, r.setting])) };
      });
    },
    async close() {
      if (!fromEnv) await stopEmbeddedPostgres(home).catch(() => {});
    },
  };
}
