/**
 * `migrate` and `db status|url|stop`. Without DATABASE_URL the embedded server is the one of the
 * nearest `.bundlefleet/` that holds one (this directory or a parent; see findEmbeddedHome);
 * `migrate` creates one here when there is none, the `db` commands never do.
 */
import type { Command } from 'commander';
import { embeddedStatus, noServerHere, stopEmbeddedPostgres } from '../db/embedded.js';
import { describeDatabase } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { EXIT, printJson, withDb } from './context.js';
import { addKindCheckOption, refuseMissingKindVersions } from './kind-check.js';

export function registerDbCommands(program: Command): void {
  addKindCheckOption(program
    .command('migrate')
    .description('apply the schema migrations (safe to run twice or from two processes at once); creates the embedded PostgreSQL here if there is none')
    .option('--json', 'print JSON'))
    .action(async (flags: { json?: boolean; allowMissingKindVersions?: boolean }) => {
      const applied = await withDb(async ({ pool, url }) => {
        const applied = await migrate(pool, url);
        await refuseMissingKindVersions(pool, flags.allowMissingKindVersions);
        return applied;
      }, { checkSchema: false, create: true });
      if (flags.json) printJson({ applied });
      else process.stdout.write(applied.length ? `applied ${applied.join(', ')}\n` : 'schema up to date\n');
    });

  const db = program.command('db').description('the embedded PostgreSQL used when DATABASE_URL is unset (found in this directory or a parent)');
  db.command('status')
    .description('which database commands here use, and whether it runs (exit 0 running, 1 stopped or none)')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      if (process.env.DATABASE_URL) {
        const info = { state: 'external', url: describeDatabase(process.env.DATABASE_URL) };
        return flags.json ? printJson(info) : void process.stdout.write(`DATABASE_URL is set: ${info.url} (no embedded server used)\n`);
      }
      const status = await embeddedStatus();
      if (status.state !== 'running') process.exitCode = EXIT.failure;
      // Field names in snake_case, as every other --json document has them.
      if (flags.json) return printJson(status.state === 'absent' ? { state: status.state, home: status.home, searched_from: status.searchedFrom } : { state: status.state, home: status.home, url: status.url, data_dir: status.dataDir, port: status.port });
      if (status.state === 'absent') {
        const where = noServerHere(status.home, status.searchedFrom);
        process.stdout.write(`none: ${where} (\`bundlefleet migrate\` or \`npm start\` creates one)\n`);
      } else {
        process.stdout.write(`${status.state}: ${describeDatabase(status.url)} of ${status.home} (data in ${status.dataDir})\n`);
        if (status.state === 'stopped') process.stdout.write('any command using it starts it again\n');
      }
    });
  db.command('url')
    .description('print the connection URL of the embedded server (starting it if it was stopped; never creating one)')
    .action(async () => {
      await withDb(async ({ url }) => void process.stdout.write(`${url}\n`), { checkSchema: false });
    });
  db.command('stop')
    .description('stop the embedded server of this directory (or the nearest parent with .bundlefleet/)')
    .action(async () => {
      const stopped = await stopEmbeddedPostgres();
      process.stdout.write(stopped ? 'stopped\n' : 'not running\n');
    });
}
