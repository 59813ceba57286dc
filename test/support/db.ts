/**
 * Per-test isolation: each test gets its own database cloned from the migrated template, dropped
 * afterwards. Anything a test opens (pools, workers, simulators) is registered for cleanup, and
 * the test fails if it left a worker running.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterEach, inject } from 'vitest';
import { createPool } from '../../src/db/pool.js';

const cleanups: Array<() => Promise<unknown>> = [];

export function onCleanup(fn: () => Promise<unknown>): void {
  cleanups.push(fn);
}

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});

export function urlFor(database: string): string {
  const u = new URL(inject('adminUrl'));
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: inject('adminUrl') });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDb {
  url: string;
  pool: pg.Pool;
  name: string;
}

/** A fresh migrated database for this test; dropped (with its connections) after it. */
export async function createTestDb(): Promise<TestDb> {
  const name = `t_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  for (let tries = 0; ; tries++) {
    try {
      await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${inject('template')}`));
      break;
    } catch (err) {
      // Two test files cloning the template at the same instant: "source database is being accessed".
      if ((err as { code?: string }).code !== '55006' || tries > 50) throw err;
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
  const url = urlFor(name);
  const pool = createPool(url, { max: 10 });
  onCleanup(async () => {
    await pool.end().catch(() => {});
    await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  });
  return { url, pool, name };
}
