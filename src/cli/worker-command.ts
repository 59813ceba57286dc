import { Option, type Command } from 'commander';
import { z } from 'zod';
import { providerUrlsFromEnv } from '../providers/client.js';
import { Worker } from '../scheduler/worker.js';
import { rootLogger } from '../logger.js';
import { intOption, openDb, parseOptions } from './context.js';
import { assertSessionConnection } from '../db/session-probe.js';
import { createMetrics, startMetricsServer } from '../http/metrics.js';
import { startSupervisorSchedule, type SupervisorSchedule } from '../supervisor/cron.js';
import { addSupervisorOptions, parseSupervisorOptions } from './supervise-command.js';
import { onShutdown } from './signals.js';
import { addFlowOptions, parseFlowFlags } from './flow-flags.js';
import { addKindCheckOption, refuseMissingKindVersions } from './kind-check.js';
import { startSignalConsumer } from '../bundles/signal-queue.js';
import { bundleKind, carriedKindVersions, signalNames } from '../bundles/kinds.js';
import { parseKindList, wholeNumberValue } from './kind-lists.js';

/** Tries of one provider call within an attempt: the first and p-retry's two retries. */
const PROVIDER_TRIES = 3;

/** Bundle kinds with a wait step in some version this build carries: the only ones a wait timeout applies to. */
const waitingKinds = () => [...new Set(carriedKindVersions().filter(({ kind, version }) => signalNames(bundleKind(kind, version)).length).map((k) => k.kind))];

/** `vip=3600`: seconds per kind (kind-lists.ts refuses an unknown kind, naming the ones that wait). */
const waitTimeouts = z
  .string()
  .transform((raw, ctx) => {
    const value = wholeNumberValue('seconds', 'vip=3600', 1, 31_536_000, '31536000 (a year)');
    const { values, issues } = parseKindList(raw, { what: 'kind with a wait step', kinds: waitingKinds(), example: 'vip=3600', value });
    for (const message of issues) ctx.addIssue({ code: 'custom', message });
    return Object.fromEntries(values);
  })
  .optional();

export const workerOptionsSchema = z
  .object({
    concurrency: intOption(1, 1000),
    leaseSeconds: intOption(1, 86_400),
    providerTimeoutMs: intOption(1, 600_000),
    pollIntervalMs: intOption(10, 3_600_000),
    drainTimeoutMs: intOption(0, 600_000),
    name: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits and _.:- only, at most 64').optional(),
    waitTimeout: waitTimeouts,
  })
  // An agent makes no provider call that could outlive its lease (invariant 9): a lease shorter
  // than one step's worst case would stop every step before its last try.
  .refine((o) => o.leaseSeconds * 1000 >= PROVIDER_TRIES * o.providerTimeoutMs, {
    path: ['leaseSeconds'],
    message: `is shorter than one step's worst case, ${PROVIDER_TRIES} tries × --provider-timeout-ms (BUNDLEFLEET_PROVIDER_TIMEOUT_MS): raise the lease or lower the timeout`,
  });

export const WORKER_FLAG_NAMES = {
  concurrency: '--concurrency (BUNDLEFLEET_CONCURRENCY)',
  leaseSeconds: '--lease-seconds (BUNDLEFLEET_LEASE_SECONDS)',
  providerTimeoutMs: '--provider-timeout-ms (BUNDLEFLEET_PROVIDER_TIMEOUT_MS)',
  pollIntervalMs: '--poll-interval-ms (BUNDLEFLEET_POLL_INTERVAL_MS)',
  drainTimeoutMs: '--drain-timeout-ms (BUNDLEFLEET_DRAIN_TIMEOUT_MS)',
  name: '--name (BUNDLEFLEET_WORKER_NAME)',
  waitTimeout: '--wait-timeout (BUNDLEFLEET_WAIT_TIMEOUT)',
};

/** Adds the worker's options (each with its env variable) to a command; `dev` shares them. */
export function addWorkerOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--concurrency <n>', 'agents running at once in this process').env('BUNDLEFLEET_CONCURRENCY').default('10'))
    .addOption(new Option('--lease-seconds <s>', 'lease written at claim and extended between steps').env('BUNDLEFLEET_LEASE_SECONDS').default('60'))
    .addOption(new Option('--provider-timeout-ms <ms>', 'timeout of one provider request').env('BUNDLEFLEET_PROVIDER_TIMEOUT_MS').default('5000'))
    .addOption(new Option('--poll-interval-ms <ms>', 'poll for due bundles even without NOTIFY').env('BUNDLEFLEET_POLL_INTERVAL_MS').default('1000'))
    .addOption(new Option('--drain-timeout-ms <ms>', 'on the first SIGTERM, how long in-flight agents may finish').env('BUNDLEFLEET_DRAIN_TIMEOUT_MS').default('20000'))
    .addOption(new Option('--name <name>', "prefix of this worker's id (default <hostname>-<pid>)").env('BUNDLEFLEET_WORKER_NAME'))
    .addOption(new Option('--wait-timeout <kind=seconds>', 'deadline of a wait for signals, per kind (default: the kind\'s own, vip 86400)').env('BUNDLEFLEET_WAIT_TIMEOUT'));
}

export function registerWorkerCommand(program: Command): void {
  addFlowOptions(addKindCheckOption(addSupervisorOptions(addWorkerOptions(program.command('worker').description('run a scheduler and its agents until SIGTERM')))))
    .addOption(new Option('--metrics-port <port>', "serve this worker's own Prometheus metrics on 127.0.0.1:<port>/metrics (0 = any free port, printed at start)").env('BUNDLEFLEET_METRICS_PORT'))
    .addOption(new Option('--supervise-cron <cron>', 'also run supervisor passes on this pg-boss cron schedule (one run per tick fleet-wide)').env('BUNDLEFLEET_SUPERVISE_CRON'))
    .addHelpText('after', `
Providers: PROVIDERS_URL (or TICKETS_URL, FLIGHTS_URL, TAXIS_URL).
The worker's liveness connection holds a session advisory lock and LISTENs: it needs PostgreSQL
directly or a session-mode pooler. Behind a transaction-mode pooler (PgBouncer pool_mode=transaction),
point --session-database-url there and keep DATABASE_URL on the pooler.
Examples:
  $ PROVIDERS_URL=http://127.0.0.1:4010 bundlefleet worker --concurrency 50
  $ bundlefleet worker --supervise-cron "* * * * *"
  $ bundlefleet worker --provider-concurrency tickets=20,flights=10 --provider-rate flights=50/s
  $ DATABASE_URL=postgres://app@pgbouncer:6432/app bundlefleet worker --session-database-url postgres://app@db:5432/app`)
    .action(async (flags: Record<string, unknown> & { superviseCron?: string }) => {
      const opts = parseOptions(workerOptionsSchema, flags, WORKER_FLAG_NAMES);
      const { metricsPort } = parseOptions(z.object({ metricsPort: intOption(0, 65_535).optional() }), flags, { metricsPort: '--metrics-port (BUNDLEFLEET_METRICS_PORT)' });
      const supervisorOpts = flags.superviseCron ? parseSupervisorOptions(flags) : undefined;
      const flow = parseFlowFlags(flags);
      const providerUrls = providerUrlsFromEnv(process.env);
      const db = await openDb({ waitSeconds: 60 });
      try {
        await refuseMissingKindVersions(db.pool, flags.allowMissingKindVersions);
      } finally {
        await db.close();
      }
      // Refused before anything starts: under transaction pooling the liveness lock and LISTEN would not stay put.
      await assertSessionConnection(db.sessionUrl, 'the worker liveness connection (session advisory lock and LISTEN)');
      const logger = rootLogger();
      const metrics = metricsPort !== undefined ? createMetrics({ logger }) : undefined;
      const { waitTimeout, ...workerOpts } = opts;
      const worker = new Worker({ databaseUrl: db.url, sessionDatabaseUrl: db.sessionUrl, providerUrls, ...workerOpts, ...flow, waitTimeoutSeconds: waitTimeout, logger, ...metrics?.hooks });
      const metricsServer = metrics ? await startMetricsServer(metricsPort!, metrics.registry) : undefined;
      let schedule: SupervisorSchedule | undefined;
      if (flags.superviseCron) {
        schedule = await startSupervisorSchedule(db.url, worker.pool, flags.superviseCron, { ...supervisorOpts, logger, onAction: metrics?.hooks.onSupervisorAction });
      }
      const signals = await startSignalConsumer(db.url, worker.pool, logger);
      worker.start();
      onShutdown(async () => {
        await signals.stop();
        await schedule?.stop();
        await worker.stop();
        await metricsServer?.close();
      });
      if (metricsServer) {
        // As serve and dev do, once running: with --metrics-port 0 this is where the port is told.
        logger.info({ url: `${metricsServer.url}/metrics` }, 'metrics server listening');
        process.stderr.write(`bundlefleet worker: metrics on ${metricsServer.url}/metrics\n`);
      }
    });
}
