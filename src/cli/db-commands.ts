import type { Command } from 'commander';
import { embeddedStatus, stopEmbeddedPostgres } from '../db/embedded.js';
import { describeDatabase } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { printJson, withDb } from './context.js';

export function registerDbCommands(program: Command): void {
  program
    .command('migrate')
    .description('apply the schema migrations (safe to run twice or from two processes at once)')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      const applied = await withDb(({ pool, url }) => migrate(pool, url), { checkSchema: false });
      if (flags.json) printJson({ applied });
      else process.stdout.write(applied.length ? `applied ${applied.join(', ')}\n` : 'schema up to date\n');
    });

  const db = program.command('db').description('the embedded PostgreSQL used when DATABASE_URL is unset');
  db.command('status')
    .description('is the embedded server here running, and where')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      if (process.env.DATABASE_URL) {
        const info = { state: 'external', url: describeDatabase(process.env.DATABASE_URL) };
        return flags.json ? printJson(info) : void process.stdout.write(`DATABASE_URL is set: ${info.url} (no embedded server used)\n`);
      }
      const status = await embeddedStatus();
      if (flags.json) return printJson(status);
      process.stdout.write(status.state === 'absent' ? `no embedded PostgreSQL under ${status.home} (created on first use)\n` : `${status.state}: ${status.url} (data in ${status.dataDir})\n`);
    });
  db.command('url')
    .description('print the connection URL (starting the embedded server if needed)')
    .action(async () => {
      await withDb(async ({ url }) => void process.stdout.write(`${url}\n`), { checkSchema: false });
    });
  db.command('stop')
    .description('stop the embedded server of this directory')
    .action(async () => {
      const stopped = await stopEmbeddedPostgres();
      process.stdout.write(stopped ? 'stopped\n' : 'not running\n');
    });
}
