import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

/**
 * `npm run test:pgbouncer`: the fleet through real PgBouncer daemons (Debian's `pgbouncer`), in
 * session and transaction mode. Not part of `npm test`, which needs nothing but Node.
 */
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/pgbouncer/**/*.pgbouncer.ts'],
    // First: refuse in one line when pgbouncer is missing; then the test PostgreSQL of `npm test`.
    globalSetup: ['test/pgbouncer/support/require-pgbouncer.ts', 'test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
  },
});
