/**
 * One PostgreSQL server for the whole run: TEST_DATABASE_URL if set, else a testcontainers
 * container when a Docker engine answers, else an embedded server in a temporary directory.
 * A template database gets the migrations once; every test clones it (see db.ts).
 * Never skips: if none of the three works, the run fails loudly.
 */
import { mkdtemp, rm, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { ensureEmbeddedPostgres, stopEmbeddedPostgres } from '../../src/db/embedded.js';
import { createPool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';

export const TEMPLATE = 'bundlefleet_template';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
    template: string;
    serverKind: string;
  }
}

async function dockerAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await Promise.race([getContainerRuntimeClient(), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 5000))]);
    return true;
  } catch {
    return false;
  }
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export default async function setup(project: TestProject) {
  let adminUrl: string;
  let serverKind: string;
  let teardown: () => Promise<void>;
  if (process.env.TEST_DATABASE_URL) {
    adminUrl = process.env.TEST_DATABASE_URL;
    serverKind = 'TEST_DATABASE_URL';
    teardown = async () => {};
  } else if (await dockerAnswers()) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const container = await new PostgreSqlContainer('postgres:17-alpine').withCommand(['postgres', '-c', 'fsync=off', '-c', 'max_connections=400']).start();
    adminUrl = container.getConnectionUri();
    serverKind = 'testcontainers';
    teardown = async () => void (await container.stop());
  } else {
    const home = await mkdtemp(join(tmpdir(), 'bundlefleet-test-'));
    await chmod(home, 0o755); // the server runs as the postgres user
    // fsync off: test data is thrown away, and it saves minutes on a two-core machine.
    adminUrl = await ensureEmbeddedPostgres({ home, settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } });
    serverKind = 'embedded';
    teardown = async () => {
      await stopEmbeddedPostgres(home, 'immediate').catch(() => {});
      await rm(home, { recursive: true, force: true });
    };
  }

  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE}`);
  await admin.query(`CREATE DATABASE ${TEMPLATE}`);
  await admin.end();
  const templateUrl = withDatabase(adminUrl, TEMPLATE);
  const pool = createPool(templateUrl, { max: 2 });
  await migrate(pool, templateUrl);
  await pool.end();

  project.provide('adminUrl', adminUrl);
  project.provide('template', TEMPLATE);
  project.provide('serverKind', serverKind);
  return teardown;
}
