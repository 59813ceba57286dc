/**
 * The chaos suite: a whole fleet on one machine, abused on purpose, then checked.
 *
 *   npm run chaos -- --bundles 150 --workers 3 --seconds 30 --fail-rate 0.08 --late-rate 0.03 \
 *                    --hang-rate 0.01 --no-rate 0.03 [fault modes] [--kills N] [--seed N] \
 *                    [--no-restart] [--database-url URL] [--json]      (--help for every flag)
 *
 * It starts a dedicated embedded PostgreSQL in a temporary directory (unless --database-url or
 * DATABASE_URL), migrates it, runs the provider simulator in this process, enqueues N VIP
 * bundles paced over the chaos window, and spawns K `bundlefleet worker` processes and one or two
 * `bundlefleet supervise --loop`. During the window every fault of the run acts side by side
 * (faults/: SIGKILLs, a PostgreSQL restart, paused processes, half-open connections, forgetful
 * and strict providers, a silent webhook, row locks held from outside). Then it stops the
 * chaos, waits (bounded) for every bundle to be terminal, and checks from the provider ledger and
 * the database (invariants.ts), measures recovery (recovery.ts), prints a JSON summary and exits
 * 0, or 1 on any violation or when bundles did not finish in time, 2 on bad usage. Every child
 * process, proxy and server is cleaned up, also on failure and on SIGINT/SIGTERM. Fleet logs are
 * kept (and their folder named) only when the run fails.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { ensureEmbeddedPostgres, stopEmbeddedPostgres } from '../db/embedded.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { mulberry32, startProviderSimulator, type ProviderSimulator, type SimulatorOptions } from '../providers/simulator.js';
import { outcomeLine, parseChaosArgs, UsageError, USAGE } from './cli.js';
import { Fleet } from './fleet.js';
import { faultsFor } from './faults/index.js';
import type { Fault, FaultContext, Preparation } from './faults/fault.js';
import { SERVER_SETTINGS } from './faults/pg-restart.js';
import { checkInvariants, TERMINAL } from './invariants.js';
import { DEAD_ALLOWED_FROM_FAIL_RATE, type ChaosOptions, type ChaosSummary } from './options.js';
import { summarize } from './summary.js';
import { enqueueWorkload, retrying } from './workload.js';
import { startHttpServer, type StartedHttpServer } from '../http/server.js';
import { createLogger, setRootLogStream } from '../logger.js';

export { parseChaosArgs } from './cli.js';
export { checkInvariants } from './invariants.js';
export { DEFAULTS, FAULT_MODES, type ChaosOptions, type ChaosSummary, type FaultMode, type Violation } from './options.js';

async function countStates(pool: pg.Pool, ids: string[]): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ state: string; n: string }>('SELECT state, count(*) AS n FROM bundles WHERE id = ANY($1::uuid[]) GROUP BY state', [ids]);
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

/** Undone bundles whose reconciliation pass (agents/reconcile.ts) is still due or under way. */
async function countUnreconciled(pool: pg.Pool, ids: string[]): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM bundles WHERE id = ANY($1::uuid[]) AND reconcile_at IS NOT NULL', [ids]);
  return Number(rows[0]!.n);
}

/** With --rate-limit: how often the provider said 429, and how often a bundle parked on it (none may have failed: an invariant). */
async function rateLimitReport(pool: pg.Pool, ids: string[], simulator: ProviderSimulator, perSecond: number): Promise<Record<string, unknown>> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND reason LIKE 'parked: % said 429%'`, [ids]);
  return { per_second: perSecond, answered_429: simulator.calls().filter((c) => c.limited).length, parked_on_429: rows[0]!.n };
}

/** What the faults ask of the fleet, merged. */
function merge(preps: Preparation[]): Required<Omit<Preparation, 'workerDatabaseUrl'>> & Pick<Preparation, 'workerDatabaseUrl'> {
  const simulator: Partial<SimulatorOptions> = {};
  const merged = { simulator, supervisorEnv: {} as NodeJS.ProcessEnv, supervisorArgs: [] as string[], supervisors: 1, workerDatabaseUrl: undefined as string | undefined };
  for (const p of preps) {
    Object.assign(merged.simulator, p.simulator);
    Object.assign(merged.supervisorEnv, p.supervisorEnv);
    merged.supervisorArgs.push(...(p.supervisorArgs ?? []));
    merged.supervisors = Math.max(merged.supervisors, p.supervisors ?? 1);
    merged.workerDatabaseUrl = p.workerDatabaseUrl ?? merged.workerDatabaseUrl;
  }
  return merged;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosSummary> {
  const t0 = Date.now();
  const say = (msg: string) => opts.verbose && process.stderr.write(`chaos [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
  const signal = opts.signal;
  // Every fault waits on the run's signal at once (its timers, pauses, connection drops).
  if (signal) setMaxListeners(100, signal);
  const runId = randomUUID().slice(0, 6);
  const random = mulberry32(opts.seed);
  const logDir = await mkdtemp(join(tmpdir(), 'bundlefleet-chaos-logs-'));
  const faults = faultsFor(opts);
  const prepared: Fault[] = [];
  let home: string | undefined;
  let pool: pg.Pool | undefined;
  let simulator: ProviderSimulator | undefined;
  let api: StartedHttpServer | undefined;
  let fleet: Fleet | undefined;
  let keepLogs = true;
  const exitHook = () => fleet?.killAllNow();
  process.once('exit', exitHook);
  try {
    let url = opts.databaseUrl;
    if (!url) {
      home = await mkdtemp(join(tmpdir(), 'bundlefleet-chaos-'));
      await chmod(home, 0o755); // the server runs as the postgres user, which must enter it
      say(`starting a dedicated PostgreSQL under ${home}`);
      url = await ensureEmbeddedPostgres({ home, settings: SERVER_SETTINGS });
    }
    // The runner's own work (enqueue pacing, the ticketing-callback API, operator cancels, row
    // locks, checks) shares this pool: 4 connections made callbacks queue behind the row-locks
    // fault for seconds (27 waiting in CI, stop 15).
    pool = createPool(url, { max: 10, applicationName: 'bundlefleet chaos' });
    await migrate(pool, url);
    const postgres = (await pool.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]!.v;

    const preps: Preparation[] = [];
    for (const fault of faults.all) {
      prepared.push(fault);
      if (fault.prepare) preps.push(await fault.prepare({ opts, databaseUrl: url, say }));
    }
    const prep = merge(preps);

    // The API the simulator's airlines confirm ticketing to (waiting bundles, vip v2).
    api = await startHttpServer({ port: 0, pool, logger: createLogger({ level: 'silent', pretty: false }) });
    simulator = await startProviderSimulator({
      ticketing: { callbackUrl: api.url, maxDelayMs: 1_500, missRate: 0.05, duplicateRate: 0.2 },
      port: 0,
      host: '127.0.0.1',
      failRate: opts.failRate,
      lateRate: opts.lateRate,
      hangRate: opts.hangRate,
      noRate: opts.noRate,
      slowRate: opts.slowRate ?? 0,
      latencyMs: opts.latencyMs,
      hangMs: opts.hangMs,
      seed: opts.seed,
      rateLimit: opts.rateLimit,
      ...prep.simulator,
    });

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: url,
      PROVIDERS_URL: simulator.url,
      BUNDLEFLEET_CONCURRENCY: String(opts.concurrency),
      BUNDLEFLEET_LEASE_SECONDS: String(opts.leaseSeconds),
      BUNDLEFLEET_POLL_INTERVAL_MS: String(opts.pollIntervalMs),
      BUNDLEFLEET_PROVIDER_TIMEOUT_MS: String(opts.providerTimeoutMs),
      BUNDLEFLEET_DRAIN_TIMEOUT_MS: '2000',
      BUNDLEFLEET_WAIT_TIMEOUT: `vip=${opts.waitTimeoutSeconds}`,
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'warn',
      LOG_FORMAT: 'json',
    };
    // Nothing of the caller's environment may steer the fleet around the faults.
    for (const name of ['TICKETS_URL', 'FLIGHTS_URL', 'TAXIS_URL', 'BUNDLEFLEET_SUPERVISE_CRON', 'BUNDLEFLEET_SESSION_DATABASE_URL', 'ALERT_WEBHOOK_URL']) delete env[name];
    fleet = new Fleet({
      runId,
      logFile: join(logDir, 'fleet.log'),
      t0,
      workerEnv: { ...env, DATABASE_URL: prep.workerDatabaseUrl ?? url },
      supervisorEnv: { ...env, ...prep.supervisorEnv },
      supervisorArgs: [
        '--interval-seconds', String(opts.superviseIntervalSeconds),
        '--backoff-base-seconds', String(opts.backoffBaseSeconds),
        '--max-attempts', String(opts.maxAttempts),
        '--max-undo-attempts', String(opts.maxUndoAttempts),
        ...prep.supervisorArgs,
      ],
    });
    for (let i = 0; i < prep.supervisors; i++) fleet.startSupervisor();
    for (let i = 0; i < opts.workers; i++) fleet.startWorker();
    say(`${opts.workers} workers and ${prep.supervisors} supervisor(s) started; providers at ${simulator.url}; faults: ${faults.all.map((f) => f.name).join(', ')}`);

    const ids: string[] = [];
    const enqueueSeconds = opts.enqueueSeconds ?? opts.seconds * 0.8;
    const chaosStart = Date.now();
    const enqueuer = enqueueWorkload(pool, { bundles: opts.bundles, soldOutShare: opts.soldOutShare, waitingShare: opts.waitingShare, enqueueSeconds, runId, start: chaosStart, signal }, ids);
    // Awaited below; marked handled now so an early failure is not an unhandled rejection.
    enqueuer.catch(() => {});

    // The chaos: every fault of the run, side by side, until the window closes.
    const ctx: FaultContext = { opts, fleet, pool, databaseUrl: url, home, random, say, signal, ids, t0, chaosStart, chaosEnd: chaosStart + opts.seconds * 1000 };
    const running = Promise.all(faults.all.map((f) => f.run?.(ctx)));
    running.catch(() => {}); // awaited below; an abort must not surface as an unhandled rejection first
    await delay(Math.max(0, ctx.chaosEnd - Date.now()), undefined, { signal });
    await running;
    await enqueuer;
    const chaosEnd = Date.now();
    say(`chaos over after ${faults.kills.kills.length} kills; waiting for every bundle to finish`);

    // Settle: every bundle terminal and every undone one reconciled (its pass runs once every call
    // that could still be in flight has run out), bounded; then the supervisor's alert for every dead one.
    const settleDeadline = Date.now() + opts.settleSeconds * 1000;
    let states: Record<string, number> = {};
    for (;;) {
      states = await retrying(() => countStates(pool!, ids), signal);
      const terminal = TERMINAL.reduce((n, s) => n + (states[s] ?? 0), 0);
      if (terminal === ids.length && (await retrying(() => countUnreconciled(pool!, ids), signal)) === 0) break;
      if (Date.now() > settleDeadline) break;
      await delay(250, undefined, { signal });
    }
    const settledAt = Date.now();
    const alertDeadline = Date.now() + Math.max(5, opts.superviseIntervalSeconds * 5) * 1000;
    while (Date.now() < alertDeadline) {
      const { rows } = await pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM bundles b WHERE b.id = ANY($1::uuid[]) AND b.state = 'dead'
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.bundle_id = b.id AND a.kind = 'dead')`,
        [ids],
      );
      if (Number(rows[0]!.n) === 0) break;
      await delay(250, undefined, { signal });
    }
    say('stopping the fleet');
    await fleet.stopAll(5000);
    say('fleet stopped; checking');

    const ledger = simulator.ledger();
    const violations = await checkInvariants(pool, ledger, ids, { deadAllowed: opts.failRate >= DEAD_ALLOWED_FROM_FAIL_RATE });
    const crashes = fleet.unexpected;
    if (crashes.length) {
      violations.push({ invariant: 'fleet survives', message: `fleet processes died on their own: ${crashes.map((c) => `${c.process} (code ${c.code}, signal ${c.signal}, at ${c.at_s.toFixed(1)} s)`).join('; ')}`, count: crashes.length, bundle_ids: [] });
    }
    const summary = await summarize({ opts, pool, ids, ledger, simulator, fleet, faults, violations, states, supervisors: prep.supervisors, home, postgres, times: { t0, chaosStart, chaosEnd, settledAt }, enqueueSeconds });
    if (opts.rateLimit !== undefined) summary.faults['rate-limit'] = await rateLimitReport(pool, ids, simulator, opts.rateLimit);
    keepLogs = !summary.ok || opts.keepLogs === true;
    if (keepLogs) summary.logs = logDir;
    return summary;
  } finally {
    say('cleaning up');
    await fleet?.stopAll(3000).catch(() => {});
    process.off('exit', exitHook);
    for (const fault of prepared) await fault.close?.().catch(() => {});
    await simulator?.close().catch(() => {});
    await api?.close(0).catch(() => {});
    await pool?.end().catch(() => {});
    if (home) {
      await stopEmbeddedPostgres(home, 'immediate').catch(() => {});
      await rm(home, { recursive: true, force: true }).catch(() => {});
    }
    say('cleaned up');
    if (!keepLogs) await rm(logDir, { recursive: true, force: true }).catch(() => {});
    else process.stderr.write(`chaos: fleet logs kept in ${logDir}\n`);
  }
}

async function main(argv: string[]): Promise<number> {
  // stdout is the summary's alone; every log line of this process goes to stderr.
  setRootLogStream('stderr');
  let opts: ChaosOptions;
  try {
    opts = parseChaosArgs(argv);
  } catch (err) {
    const code = err instanceof UsageError ? err.exitCode : 2;
    (code === 0 ? process.stdout : process.stderr).write(err instanceof UsageError ? `${err.message}\n` : `bad usage: ${(err as Error).message}\n${USAGE}\n`);
    return code;
  }
  const json = !opts.verbose;
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write(`chaos: ${sig}: stopping and cleaning up (again to exit at once)\n`);
    abort.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    const summary = await runChaos({ ...opts, signal: abort.signal });
    process.stdout.write(`${JSON.stringify(summary, null, json ? undefined : 2)}\n`);
    if (!json) process.stderr.write(outcomeLine(summary));
    return summary.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`chaos: ${abort.signal.aborted ? 'interrupted' : 'failed'}: ${(err as Error).message}\n`);
    return abort.signal.aborted ? 130 : 1;
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}
