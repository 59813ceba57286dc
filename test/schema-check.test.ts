/**
 * Commands refuse a database that lacks any of this build's migrations, not only one below the
 * highest number: branches merged out of order (002, 007, then 003 and 004) can leave a database
 * at version 7 without 003.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { cli, expectNoStack } from './support/cli.js';

describe('schema check', () => {
  it('names a missing lower migration and says to run migrate', async () => {
    const db = await createTestDb();
    await db.pool.query('DELETE FROM schema_migrations WHERE version = 3');
    const run = await cli(db.url, ['list']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('the bundlefleet schema is out of date (003_active_keys.sql not applied): run `bundlefleet migrate`');
    expectNoStack(run);
  });
});
