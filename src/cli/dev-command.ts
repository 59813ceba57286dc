/**
 * `bundlefleet dev` (what `npm start` runs): the embedded PostgreSQL (created here if there is
 * none), migrations, the provider simulator, the HTTP server with the status page and /metrics,
 * a worker and a supervisor loop, in one process until Ctrl-C.
 *
 * One dev per project: it records itself in `.bundlefleet/dev.json`, and a second one (from the
 * project or below it) stops at once saying which is running and where (exit 1). With
 * DATABASE_URL there is no embedded database, but the record is still what refuses a second dev:
 * it goes into the project's `.bundlefleet/` when there is one, else into a `./.bundlefleet/`
 * made for it and removed again on exit (one left by a crash holds no server, so lookups pass it
 * by, db/embedded.ts). A port taken by another program is a sentence naming the port and the flag
 * to change it (ports.ts), never a raw EADDRINUSE; nothing is left running when start-up fails.
 */
import { createServer } from 'node:net';
import { basename, delimiter, dirname, isAbsolute, relative, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { embeddedHome } from '../db/embedded.js';
import { describeDatabase } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { AddressInUse, Conflict } from '../errors.js';
import { asAddressInUse, portsTaken, type PortSetting } from './ports.js';
import { createMetrics } from '../http/metrics.js';
import type { StartedHttpServer } from '../http/server.js';
import { startProviderSimulator, type ProviderSimulator } from '../providers/simulator.js';
import { providerUrlsFromEnv } from '../providers/client.js';
import { Worker } from '../scheduler/worker.js';
import { rootLogger } from '../logger.js';
import { intOption, openDb, parseOptions } from './context.js';
import { allowNamedStatementsOnSession, assertSessionConnection } from '../db/session-probe.js';
import { alreadyRunningMessage, removeDevRecord, runningDev, writeDevRecord } from './dev-record.js';
import { onShutdown } from './signals.js';
import { apiTokenFromEnv, listenHttp } from './serve-command.js';
import { addSupervisorOptions, parseSupervisorOptions, superviseLoop } from './supervise-command.js';
import { addWorkerOptions, workerOptionsSchema, WORKER_FLAG_NAMES } from './worker-command.js';

const HOST = '127.0.0.1';
const devOptionsSchema = z.object({ port: intOption(0, 65_535), providersPort: intOption(0, 65_535) });
const DEV_FLAG_NAMES = { port: '--port (PORT)', providersPort: '--providers-port (BUNDLEFLEET_PROVIDERS_PORT)' };

const HTTP_PORT: PortSetting = { flag: '--port', env: 'PORT', example: 'npm start -- --port 0' };
const PROVIDERS_PORT: PortSetting = { flag: '--providers-port', env: 'BUNDLEFLEET_PROVIDERS_PORT', example: 'npm start -- --providers-port 0' };

/** A taken port, said with what to do; names the dev that holds it when it is ours. */
async function devPortTaken(taken: AddressInUse[], home: string): Promise<Error> {
  const other = await runningDev(home);
  if (other) return new Conflict(alreadyRunningMessage(other), { cause: taken[0] });
  const settings = taken.map((err) => ({ err, setting: err.what === 'the provider simulator' ? PROVIDERS_PORT : HTTP_PORT }));
  return portsTaken(settings, `npm start -- ${settings.map((s) => `${s.setting.flag} 0`).join(' ')}`);
}

/**
 * How to run this CLI from `baseDir` in another terminal: its name when its directory is on PATH
 * (not a node_modules/.bin npm added for this run), else a path relative to `baseDir`, else the full path.
 */
export function commandToRun(script: string, baseDir: string, pathEnv = process.env.PATH ?? ''): string {
  const dir = dirname(resolve(script));
  if (pathEnv.split(delimiter).some((d) => d && !d.includes('node_modules') && resolve(d) === dir)) return basename(script);
  const rel = relative(baseDir, resolve(script));
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? `./${rel}` : resolve(script);
}

export interface DevBannerInfo {
  statusPage: string;
  database: string;
  /** The providers line: the simulator's URL, or where the real ones are configured. */
  providers: string;
  /** How to run the CLI (commandToRun), from the project directory or `cwd`. */
  command: string;
  /** The embedded database's `.bundlefleet/`; undefined with DATABASE_URL. */
  embeddedHome: string | undefined;
  cwd: string;
}

/** What dev prints once everything runs: where things are, and what to run next, true to where the database is. */
export function devBanner(b: DevBannerInfo): string {
  const c = b.command;
  const where = b.embeddedHome ? `in ${dirname(b.embeddedHome)}` : `with the same DATABASE_URL${c.startsWith('./') ? ` (in ${b.cwd})` : ''}`;
  const stop = b.embeddedHome ? `Ctrl-C stops everything (the embedded database keeps running: ${c} db stop).` : 'Ctrl-C stops everything; the database at DATABASE_URL is left as it is.';
  return `
bundlefleet dev is running
  status page: ${b.statusPage}/   (metrics: ${b.statusPage}/metrics)
  database:    ${b.database}${b.embeddedHome ? ` (embedded, ${b.embeddedHome})` : ' (DATABASE_URL)'}
  providers:   ${b.providers}
In another terminal, ${where}:
  ${c} enqueue --customer-email ada@example.com --show-id 00000000-0001-4000-8000-000000000001 --tickets 2 \\
      --passenger "Ada Lovelace" --inbound-flight-id 00000000-0002-4000-8000-000000000117 \\
      --return-flight-id 00000000-0002-4000-8000-000000000118 --json
  ${c} inspect <vip_bundle_id>
  ${c} stats
  ${c} alerts
${stop}
`;
}

/** Fails with AddressInUse when `port` is taken, so a doomed start creates no database first. */
async function checkPortFree(what: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new AddressInUse(what, HOST, port, undefined, { cause: err }) : err));
    probe.listen(port, HOST, () => probe.close(() => resolve()));
  });
}

export function registerDevCommand(program: Command): void {
  addSupervisorOptions(addWorkerOptions(program.command('dev').description('everything in one process: embedded PostgreSQL, migrations, provider simulator, status page and /metrics, worker, supervisor loop')))
    .addOption(new Option('--port <port>', 'port of the HTTP server: status page, API, /metrics (0 = any free port)').env('PORT').default('8080'))
    .addOption(new Option('--providers-port <port>', 'port of the provider simulator (0 = any free port)').env('BUNDLEFLEET_PROVIDERS_PORT').default('4010'))
    .addHelpText(
      'after',
      `
One dev runs per project: a second one exits 1 naming the running one (pid, URLs).
With DATABASE_URL set, no embedded database is created or started.
Examples:
  $ npm start                                # bundlefleet dev: http://127.0.0.1:8080/ and providers on :4010
  $ npm start -- --port 0 --providers-port 0 # any free ports (printed in the banner)
  $ bundlefleet dev --concurrency 50
  $ DATABASE_URL=postgres://localhost/bundlefleet bundlefleet dev`,
    )
    .action(async (flags: Record<string, unknown>) => {
      const opts = parseOptions(workerOptionsSchema, flags, WORKER_FLAG_NAMES);
      const { port, providersPort } = parseOptions(devOptionsSchema, flags, DEV_FLAG_NAMES);
      const supervisorOpts = parseSupervisorOptions(flags);
      const apiToken = apiTokenFromEnv();
      const log = rootLogger();
      // The project's .bundlefleet/ (found upwards): the embedded database's, and the dev record's even with DATABASE_URL.
      const home = await embeddedHome();
      const other = await runningDev(home);
      if (other) throw new Conflict(alreadyRunningMessage(other));
      const simulate = !process.env.PROVIDERS_URL && !process.env.TICKETS_URL;
      // Every port is checked before anything starts, and all the taken ones are named at once.
      const taken: AddressInUse[] = [];
      for (const [what, p] of [...(simulate ? [['the provider simulator', providersPort] as const] : []), ['the HTTP server', port] as const]) {
        await checkPortFree(what, p).catch((err: unknown) => {
          if (!(err instanceof AddressInUse)) throw err;
          taken.push(err);
        });
      }
      if (taken.length) throw await devPortTaken(taken, home);

      const db = await openDb({ checkSchema: false, create: true, max: 10 });
      // The worker's liveness connection needs a session: refused before anything starts.
      await assertSessionConnection(db.sessionUrl, 'the worker liveness connection (session advisory lock and LISTEN)').catch(async (err) => {
        await db.close();
        throw err;
      });
      // The HTTP side's pool names its small statements on a session (db/statements.ts), as the worker's does.
      await allowNamedStatementsOnSession(db.pool, db.url, db.sessionUrl);
      let simulator: ProviderSimulator | undefined;
      let draining = false;
      const metrics = createMetrics({ logger: log });
      let http: StartedHttpServer;
      let started: StartedHttpServer | undefined;
      try {
        await migrate(db.pool, db.url);
        metrics.collectFromDb(db.pool);
        http = started = await listenHttp({ port, host: HOST, pool: db.pool, logger: log, apiToken, metrics, isDraining: () => draining });
        // Use the real providers when configured, else the simulator, whose airlines confirm
        // ticketing back to this server (vip bundles wait for it before their taxi).
        if (simulate) {
          const ticketing = { callbackUrl: http.url, token: apiToken, maxDelayMs: 2_000 };
          simulator = await startProviderSimulator({ port: providersPort, host: HOST, ticketing }).catch((err: unknown) => {
            throw asAddressInUse(err, 'the provider simulator', HOST, providersPort);
          });
        }
      } catch (err) {
        await simulator?.close();
        await started?.close(0);
        await db.close();
        if (err instanceof AddressInUse) throw await devPortTaken([err], home);
        throw err;
      }
      const providerUrls = simulator ? { tickets: simulator.url, flights: simulator.url, taxis: simulator.url } : providerUrlsFromEnv(process.env);
      const database = describeDatabase(db.url);
      // With DATABASE_URL and no project .bundlefleet/, this makes one for the record: removed on exit.
      const madeHome = await writeDevRecord(home, { pid: process.pid, startedAt: new Date().toISOString(), statusPage: http.url, providers: simulator?.url ?? null, database });

      const { waitTimeout, ...workerOpts } = opts;
      const worker = new Worker({ databaseUrl: db.url, sessionDatabaseUrl: db.sessionUrl, providerUrls, ...workerOpts, waitTimeoutSeconds: waitTimeout, logger: log, ...metrics.hooks });
      worker.start();
      const supervisor = superviseLoop(worker.pool, { ...supervisorOpts, logger: log, onAction: metrics.hooks.onSupervisorAction }, 5_000);
      const embedded = process.env.DATABASE_URL ? undefined : home;
      const cwd = process.cwd();
      process.stderr.write(
        devBanner({
          statusPage: http.url,
          database,
          providers: simulator ? `simulator at ${simulator.url} (ledger: ${simulator.url}/__ledger); its airlines confirm ticketing to the API` : 'from PROVIDERS_URL',
          command: commandToRun(process.argv[1] ?? 'bundlefleet', embedded ? dirname(embedded) : cwd),
          embeddedHome: embedded,
          cwd,
        }),
      );
      onShutdown(async () => {
        draining = true;
        await http.close(5_000);
        await supervisor.stop();
        await worker.stop();
        await simulator?.close();
        await db.close();
        await removeDevRecord(home, madeHome);
      });
    });
}
