/**
 * `migrate` and `db status|url|stop`. Without DATABASE_URL the embedded server is the one of the
 * nearest `.bundlefleet/` that holds one (this directory or a parent; see findEmbeddedHome);
 * `migrate` creates one here when there is none, the `db` commands never do.
 */
import type { Command } from 'commander';
import pg from 'pg';
import { embeddedStatus, noServerHere, stopEmbeddedPostgres } from '../db/embedded.js';
import { describeDatabase } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { EXIT, printJson, withDb } from './context.js';
import { runningDev } from './dev-record.js';
import { BadInput, Conflict } from '../errors.js';
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
    .option('--json', 'print JSON: {"url"}')
    .action(async (flags: { json?: boolean }) => {
      const url = await withDb(async ({ url }) => url, { checkSchema: false });
      if (flags.json) printJson({ url });
      else process.stdout.write(`${url}\n`);
    });
  db.command('stop')
    .description('stop the embedded server of this directory (or the nearest parent with .bundlefleet/); refused while other processes are connected to it, unless --force')
    .option('--force', 'stop it even while DATABASE_URL is set or other processes (a dev, a worker) are connected to it')
    .action(async (flags: { force?: boolean }) => {
      if (process.env.DATABASE_URL?.trim() && !flags.force) {
        throw new BadInput(`DATABASE_URL is set: commands here use ${describeDatabase(process.env.DATABASE_URL)}, not an embedded server; nothing was stopped (unset DATABASE_URL, or pass --force, to stop the embedded server of this directory)`);
      }
      const status = await embeddedStatus();
      if (status.state === 'running' && !flags.force) await refuseWhileConnected(status.url, status.home);
      const stopped = await stopEmbeddedPostgres();
      process.stdout.write(stopped ? 'stopped\n' : 'not running\n');
    });
}

/**
 * A stopped server under a running `dev` or worker leaves them failing every check (a `dev` does
 * not start it again; a worker waits for it): `db stop` says who is connected instead, naming the
 * project's `dev` when one runs.
 */
async function refuseWhileConnected(url: string, home: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, application_name: 'bundlefleet db stop', connectionTimeoutMillis: 5_000, query_timeout: 5_000 });
  await client.connect();
  const connected = async () =>
    (await client.query<{ name: string; n: number }>(
      `SELECT coalesce(nullif(application_name, ''), 'unnamed') AS name, count(*)::int AS n FROM pg_stat_activity
       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1`,
    )).rows;
  let others: Array<{ name: string; n: number }>;
  try {
    others = await connected();
    // A command that has just exited (`bundlefleet stats && bundlefleet db stop`) may still show
    // its backend for a moment: look again before refusing.
    if (others.length) {
      await new Promise((r) => setTimeout(r, 300));
      others = await connected();
    }
  } finally {
    await client.end();
  }
  if (!others.length) return;
  const dev = await runningDev(home);
  const who = others.map((o) => `${o.name} ×${o.n}`).join(', ');
  throw new Conflict(
    `not stopped: ${others.reduce((sum, o) => sum + o.n, 0)} connection(s) from other processes use this server (${who})` +
      (dev ? `, among them bundlefleet dev pid ${dev.pid} (status page ${dev.statusPage}/)` : '') +
      `; stop them first${dev ? ` (Ctrl-C in the dev's terminal, or kill ${dev.pid})` : ''}, or pass --force`,
  );
}
