/**
 * The chaos suite: a whole fleet on one machine, abused on purpose, then checked.
 *
 *   npm run chaos -- --bundles 150 --workers 3 --seconds 30 --fail-rate 0.08 --late-rate 0.03 \
 *                    --hang-rate 0.01 --no-rate 0.03 [--kills N] [--seed N] [--no-restart] \
 *                    [--database-url URL] [--json]
 *
 * It starts a dedicated embedded PostgreSQL in a temporary directory (unless --database-url or
 * DATABASE_URL), migrates it, runs the provider simulator in this process with the given fault
 * rates, enqueues N VIP bundles (about 3 % of them with a sold-out return flight (the simulator's 501d0000-… ids), which the
 * simulator always refuses) paced over the chaos window, and spawns K `bundlefleet worker`
 * processes and one `bundlefleet supervise --loop`. During the chaos window it SIGKILLs a random
 * worker every ~2 s (starting a replacement at once) and restarts PostgreSQL once in immediate
 * mode (a crash-like stop). Then it stops the chaos, waits (bounded) for every bundle to be
 * terminal, and checks from the provider ledger and the database:
 *
 *   - every bundle is terminal (completed, compensated or dead) and none is missing;
 *   - no step was booked twice: one ledger entry with a reference per (bundle, step) key, the
 *     reference the database recorded is the one the provider holds, and every completed bundle
 *     has exactly its four keys `booked` in the ledger;
 *   - nothing is live (booked) in the ledger for a compensated bundle;
 *   - every dead bundle has a `dead` alert;
 *   - no fleet process died on its own (a PostgreSQL restart must not crash a worker).
 *
 * It also measures recovery: for each bundle in flight on a worker when it was SIGKILLed, the
 * time from the kill until another worker claimed it again (from bundle_history), p50/p95/max.
 * It prints a JSON summary and exits 0, or 1 on any violation or when bundles did not finish
 * in time, 2 on bad usage. Every child process and the server are cleaned up, also on failure
 * and on SIGINT/SIGTERM. Worker and supervisor logs are kept (and their folder named) only when
 * the run fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { arch, cpus, platform, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { z } from 'zod';
import { ensureEmbeddedPostgres, restartEmbeddedPostgres, stopEmbeddedPostgres } from '../db/embedded.js';
import { createPool } from '../db/pool.js';
import { migrate } from '../db/migrate.js';
import { enqueueBundles } from '../bundles/enqueue.js';
import { vipKindV1 } from '../bundles/kinds.js';
import { exampleId, mulberry32, soldOutId, startProviderSimulator, type LedgerEntry, type ProviderSimulator } from '../providers/simulator.js';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'bundlefleet');
const TERMINAL = ['completed', 'compensated', 'dead'];
// The chaos run enqueues vip v1 (the four bookings); waiting bundles (v2) are not in it yet.
const STEP_NAMES = vipKindV1.steps.map((s) => s.name);
/** Server settings of the dedicated server: no fsync (an immediate stop is not an OS crash, so nothing is lost), more connections. */
const SERVER_SETTINGS = { fsync: 'off', full_page_writes: 'off' };

export interface ChaosOptions {
  bundles: number;
  workers: number;
  /** Total SIGKILLs during the chaos window; undefined = one every killEveryMs. */
  kills?: number;
  killEveryMs: number;
  seconds: number;
  failRate: number;
  lateRate: number;
  hangRate: number;
  noRate: number;
  latencyMs: number;
  hangMs: number;
  providerTimeoutMs: number;
  seed: number;
  restart: boolean;
  /** When the PostgreSQL restart happens, as a share of the chaos window. */
  restartAt: number;
  databaseUrl?: string;
  concurrency: number;
  leaseSeconds: number;
  pollIntervalMs: number;
  superviseIntervalSeconds: number;
  backoffBaseSeconds: number;
  maxAttempts: number;
  /** Seconds over which bundles are enqueued (0 = all at the start); default 80 % of the window. */
  enqueueSeconds?: number;
  /** How long to wait, after the chaos, for every bundle to be terminal. */
  settleSeconds: number;
  soldOutShare: number;
  recoveryTargetMs: number;
  /** Progress lines on stderr. */
  verbose?: boolean;
  signal?: AbortSignal;
}

export const DEFAULTS: Omit<ChaosOptions, 'bundles' | 'workers' | 'seconds'> = {
  killEveryMs: 2000,
  failRate: 0,
  lateRate: 0,
  hangRate: 0,
  noRate: 0,
  latencyMs: 150,
  hangMs: 3000,
  providerTimeoutMs: 1000,
  seed: 1,
  restart: true,
  restartAt: 0.5,
  concurrency: 10,
  leaseSeconds: 60,
  pollIntervalMs: 100,
  superviseIntervalSeconds: 1,
  backoffBaseSeconds: 0.2,
  maxAttempts: 5,
  settleSeconds: 120,
  soldOutShare: 0.03,
  recoveryTargetMs: 2000,
};

export interface Violation {
  invariant: string;
  message: string;
  count: number;
  bundle_ids: string[];
}

export interface ChaosSummary {
  ok: boolean;
  bundles: number;
  enqueued: number;
  states: Record<string, number>;
  violations: Violation[];
  recovery: {
    kills: number;
    in_flight_at_kill: number;
    reclaimed: number;
    measured: number;
    target_ms: number;
    p50_ms: number | null;
    p95_ms: number | null;
    max_ms: number | null;
    within_target: boolean | null;
    kill_to_reset_p50_ms: number | null;
    kill_to_reset_max_ms: number | null;
    excluded_pg_restart_window: number;
    all_incl_restart_window: { p50_ms: number | null; max_ms: number | null };
  };
  pg_restart: { at_s: number; downtime_ms: number } | { skipped: string } | null;
  unexpected_exits: Array<{ process: string; code: number | null; signal: string | null; at_s: number }>;
  ledger: { entries: number; booked: number; cancelled: number; refused: number; book_calls: number; replayed_keys: number; live_for_dead: number };
  supervisor_resets: { owner_gone: number; lease_expired: number };
  duration_s: number;
  chaos_s: number;
  settle_s: number;
  throughput_bundles_per_s: number;
  settings: Record<string, unknown>;
  machine: { os: string; arch: string; cpus: number; cpu_model: string; node: string; postgres: string };
  logs?: string;
}

function percentile(sorted: number[], p: number): number | null {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function payload(i: number, soldOut: boolean): Record<string, unknown> {
  return {
    customer_email: `chaos${i}@example.com`,
    show_id: exampleId(1, i % 7),
    number_of_tickets: 1 + (i % 4),
    passengers: [`Passenger ${i} A`, `Passenger ${i} B`],
    inbound_flight_id: exampleId(2, i % 13),
    return_flight_id: soldOut ? soldOutId(i) : exampleId(3, i % 11),
  };
}

interface FleetProcess {
  name: string;
  role: 'worker' | 'supervisor';
  child: ChildProcess;
  exited: Promise<void>;
  /** Set before we kill or stop it, so its exit is not counted as a crash. */
  expected: boolean;
}

class Fleet {
  readonly procs = new Set<FleetProcess>();
  readonly unexpected: ChaosSummary['unexpected_exits'] = [];
  private seq = 0;
  private closing = false;
  /** While PostgreSQL restarts, new workers wait: one starting then would refuse to start (exit 1), rightly. */
  private paused = false;
  private queued = 0;
  lastSpawnAt = 0;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly runId: string,
    private readonly logFile: string,
    private readonly t0: number,
    private readonly supervisorArgs: string[],
  ) {}

  private spawnProcess(role: FleetProcess['role'], args: string[], extraEnv: NodeJS.ProcessEnv, name: string): FleetProcess {
    this.lastSpawnAt = Date.now();
    const fd = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...this.env, ...extraEnv }, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const proc: FleetProcess = {
      name,
      role,
      child,
      expected: false,
      exited: new Promise<void>((r) => child.once('exit', () => r())),
    };
    child.once('exit', (code, signal) => {
      this.procs.delete(proc);
      if (proc.expected || this.closing) return;
      // Died on its own: record it and keep the fleet at strength.
      this.unexpected.push({ process: name, code, signal, at_s: (Date.now() - this.t0) / 1000 });
      setTimeout(() => {
        if (this.closing) return;
        if (role === 'worker') this.startWorker();
        else this.startSupervisor();
      }, 500);
    });
    this.procs.add(proc);
    return proc;
  }

  startWorker(): void {
    if (this.closing) return;
    if (this.paused) {
      this.queued++;
      return;
    }
    const name = `chaos-${this.runId}-w${++this.seq}`;
    this.spawnProcess('worker', ['worker'], { BUNDLEFLEET_WORKER_NAME: name }, name);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    for (; this.queued > 0; this.queued--) this.startWorker();
  }

  startSupervisor(): FleetProcess {
    return this.spawnProcess('supervisor', ['supervise', '--loop', ...this.supervisorArgs], {}, `chaos-${this.runId}-supervisor`);
  }

  workers(): FleetProcess[] {
    return [...this.procs].filter((p) => p.role === 'worker' && !p.expected);
  }

  async kill(proc: FleetProcess): Promise<void> {
    proc.expected = true;
    proc.child.kill('SIGKILL');
    await proc.exited;
  }

  /** SIGTERM everyone (graceful), SIGKILL whoever is still there after `graceMs`. */
  async stopAll(graceMs = 8000): Promise<void> {
    this.closing = true;
    const all = [...this.procs];
    for (const p of all) {
      p.expected = true;
      p.child.kill('SIGTERM');
    }
    await Promise.race([Promise.all(all.map((p) => p.exited)), delay(graceMs, undefined, { ref: false })]);
    for (const p of [...this.procs]) p.child.kill('SIGKILL');
    await Promise.all(all.map((p) => p.exited));
  }

  /** Last-resort synchronous cleanup (process exit). */
  killAllNow(): void {
    this.closing = true;
    for (const p of this.procs) p.child.kill('SIGKILL');
  }
}

async function countStates(pool: pg.Pool, ids: string[]): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ state: string; n: string }>('SELECT state, count(*) AS n FROM bundles WHERE id = ANY($1::uuid[]) GROUP BY state', [ids]);
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

function violation(invariant: string, message: string, ids: string[]): Violation {
  const unique = [...new Set(ids)];
  return { invariant, message, count: unique.length, bundle_ids: unique.slice(0, 50) };
}

/** Checks the invariants from the provider ledger and the database. */
export async function checkInvariants(pool: pg.Pool, ledger: LedgerEntry[], ids: string[]): Promise<Violation[]> {
  const violations: Violation[] = [];
  const { rows: bundles } = await pool.query<{ id: string; state: string }>('SELECT id, state FROM bundles WHERE id = ANY($1::uuid[])', [ids]);
  const stateOf = new Map(bundles.map((b) => [b.id, b.state]));

  const missing = ids.filter((id) => !stateOf.has(id));
  if (missing.length) violations.push(violation('no bundle lost', 'enqueued bundles missing from the database', missing));
  const unfinished = bundles.filter((b) => !TERMINAL.includes(b.state));
  if (unfinished.length) violations.push(violation('every bundle terminal', `bundles not terminal (${[...new Set(unfinished.map((b) => b.state))].join(', ')})`, unfinished.map((b) => b.id)));

  // Ledger entries per bundle and step, from the key `<bundle_id>:<step>`.
  const byKey = new Map<string, LedgerEntry[]>();
  const byBundle = new Map<string, LedgerEntry[]>();
  const stray: string[] = [];
  for (const e of ledger) {
    const [bundleId, step] = e.idempotency_key.split(':');
    if (!bundleId || !step || !STEP_NAMES.includes(step) || !stateOf.has(bundleId)) {
      stray.push(bundleId ?? e.idempotency_key);
      continue;
    }
    byKey.set(e.idempotency_key, [...(byKey.get(e.idempotency_key) ?? []), e]);
    byBundle.set(bundleId, [...(byBundle.get(bundleId) ?? []), e]);
  }
  if (stray.length) violations.push(violation('one key per (bundle, step)', 'ledger entries whose key is not <bundle_id>:<step> of a bundle of this run', stray));

  // No step booked twice: one entry holding a reference per key (a second would mean a second effect).
  const twice = [...byKey.entries()].filter(([, es]) => es.filter((e) => e.reference).length > 1).map(([k]) => k.split(':')[0]!);
  if (twice.length) violations.push(violation('no step booked twice', 'a (bundle, step) key holds two references in the ledger', twice));

  // The reference the database recorded must be the one the provider holds for that key.
  const { rows: steps } = await pool.query<{ bundle_id: string; idempotency_key: string; status: string; reference: string | null }>(
    `SELECT bundle_id, idempotency_key, status, reference FROM steps WHERE bundle_id = ANY($1::uuid[]) AND reference IS NOT NULL`,
    [ids],
  );
  const mismatched = steps.filter((s) => {
    const held = byKey.get(s.idempotency_key)?.find((e) => e.reference);
    return !held || held.reference !== s.reference;
  });
  if (mismatched.length) violations.push(violation('no step booked twice', 'a step row records a reference the provider does not hold for its key', mismatched.map((s) => s.bundle_id)));
  const { rows: tickets } = await pool.query<{ bundle_id: string; reference: string }>('SELECT bundle_id, reference FROM tickets WHERE bundle_id = ANY($1::uuid[])', [ids]);
  const badTickets = tickets.filter((t) => byKey.get(`${t.bundle_id}:show_tickets`)?.find((e) => e.reference)?.reference !== t.reference);
  if (badTickets.length) violations.push(violation('no step booked twice', 'the local tickets record differs from the provider reference', badTickets.map((t) => t.bundle_id)));
  const withTickets = new Set(tickets.map((t) => t.bundle_id));
  const ticketless = [...stateOf].filter(([id, state]) => state === 'completed' && !withTickets.has(id)).map(([id]) => id);
  if (ticketless.length) violations.push(violation('tickets recorded locally', 'a completed bundle has no local tickets record', ticketless));

  const completedWrong: string[] = [];
  const compensatedLive: string[] = [];
  for (const [id, state] of stateOf) {
    const entries = byBundle.get(id) ?? [];
    if (state === 'completed') {
      // Exactly its four keys, each booked (live) at the provider.
      const live = new Set(entries.filter((e) => e.status === 'booked').map((e) => e.idempotency_key));
      const expected = STEP_NAMES.map((s) => `${id}:${s}`);
      if (live.size !== expected.length || !expected.every((k) => live.has(k)) || entries.length !== expected.length) completedWrong.push(id);
    } else if (state === 'compensated') {
      if (entries.some((e) => e.status === 'booked')) compensatedLive.push(id);
    }
  }
  if (completedWrong.length) violations.push(violation('completed = exactly four live bookings', 'a completed bundle does not hold exactly its four keys booked in the ledger', completedWrong));
  if (compensatedLive.length) violations.push(violation('nothing live after compensation', 'a compensated bundle still has a booking live (status booked) in the ledger', compensatedLive));

  const { rows: deadWithoutAlert } = await pool.query<{ id: string }>(
    `SELECT b.id FROM bundles b WHERE b.id = ANY($1::uuid[]) AND b.state = 'dead'
       AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.bundle_id = b.id AND a.kind = 'dead')`,
    [ids],
  );
  if (deadWithoutAlert.length) violations.push(violation('dead bundles alerted', 'a dead bundle has no dead alert', deadWithoutAlert.map((r) => r.id)));
  return violations;
}

interface Kill {
  name: string;
  at: number;
}

/**
 * For every bundle in flight on a SIGKILLed worker at the moment of the kill (claimed by it
 * before the kill, attempt not ended before it), the time from the kill until a newer attempt
 * was claimed, from bundle_history.
 */
async function measureRecovery(pool: pg.Pool, kills: Kill[], restartWindow: [number, number] | undefined, targetMs: number): Promise<ChaosSummary['recovery']> {
  const recoveries: number[] = [];
  const all: number[] = [];
  const resets: number[] = [];
  let inFlight = 0;
  let excluded = 0;
  for (const kill of kills) {
    const { rows } = await pool.query<{ bundle_id: string; ended_at: Date | null; ended_reason: string | null; reclaimed_at: Date | null }>(
      `SELECT c.bundle_id, e.at AS ended_at, e.reason AS ended_reason,
              (SELECT min(h.at) FROM bundle_history h
                WHERE h.bundle_id = c.bundle_id AND h.attempt > c.attempt AND h.to_state = 'running' AND h.reason LIKE 'claimed%') AS reclaimed_at
       FROM bundle_history c
       LEFT JOIN LATERAL (
         SELECT h.at, h.reason FROM bundle_history h
         WHERE h.bundle_id = c.bundle_id AND h.attempt = c.attempt AND h.to_state <> 'running'
         ORDER BY h.id LIMIT 1
       ) e ON true
       WHERE c.actor LIKE $1 || '.%' AND c.to_state = 'running' AND c.reason LIKE 'claimed%' AND c.at <= $2`,
      [kill.name, new Date(kill.at)],
    );
    for (const r of rows) {
      if (r.ended_at && r.ended_at.getTime() < kill.at) continue; // finished before the kill
      inFlight++;
      if (r.ended_at && /owner gone/.test(r.ended_reason ?? '')) resets.push(r.ended_at.getTime() - kill.at);
      if (!r.reclaimed_at) continue;
      const ms = Math.max(0, r.reclaimed_at.getTime() - kill.at);
      all.push(ms);
      // A PostgreSQL restart between the kill and the re-claim delays it for reasons of its own.
      const overlapsRestart = restartWindow && restartWindow[0] <= r.reclaimed_at.getTime() && restartWindow[1] >= kill.at;
      if (overlapsRestart) excluded++;
      else recoveries.push(ms);
    }
  }
  const sorted = recoveries.sort((a, b) => a - b);
  const sortedAll = all.sort((a, b) => a - b);
  const sortedResets = resets.sort((a, b) => a - b);
  return {
    kills: kills.length,
    in_flight_at_kill: inFlight,
    reclaimed: all.length,
    measured: sorted.length,
    target_ms: targetMs,
    p50_ms: percentile(sorted, 50),
    p95_ms: percentile(sorted, 95),
    max_ms: percentile(sorted, 100),
    within_target: sorted.length ? sorted.at(-1)! <= targetMs : null,
    kill_to_reset_p50_ms: percentile(sortedResets, 50),
    kill_to_reset_max_ms: percentile(sortedResets, 100),
    excluded_pg_restart_window: excluded,
    all_incl_restart_window: { p50_ms: percentile(sortedAll, 50), max_ms: percentile(sortedAll, 100) },
  };
}

/** Retries a database call through a PostgreSQL restart, for the runner's own statements. */
async function retrying<T>(fn: () => Promise<T>, signal: AbortSignal | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline || signal?.aborted) throw err;
      await delay(250);
    }
  }
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosSummary> {
  const t0 = Date.now();
  const say = (msg: string) => opts.verbose && process.stderr.write(`chaos [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
  const signal = opts.signal;
  const runId = randomUUID().slice(0, 6);
  const random = mulberry32(opts.seed);
  const logDir = await mkdtemp(join(tmpdir(), 'bundlefleet-chaos-logs-'));
  let home: string | undefined;
  let pool: pg.Pool | undefined;
  let simulator: ProviderSimulator | undefined;
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
    pool = createPool(url, { max: 4, applicationName: 'bundlefleet chaos' });
    await migrate(pool, url);
    const postgres = (await pool.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]!.v;

    simulator = await startProviderSimulator({
      port: 0,
      host: '127.0.0.1',
      failRate: opts.failRate,
      lateRate: opts.lateRate,
      hangRate: opts.hangRate,
      noRate: opts.noRate,
      latencyMs: opts.latencyMs,
      hangMs: opts.hangMs,
      seed: opts.seed,
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
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'warn',
      LOG_FORMAT: 'json',
    };
    delete env.TICKETS_URL;
    delete env.FLIGHTS_URL;
    delete env.TAXIS_URL;
    delete env.BUNDLEFLEET_SUPERVISE_CRON;
    const supervisorArgs = [
      '--interval-seconds', String(opts.superviseIntervalSeconds),
      '--backoff-base-seconds', String(opts.backoffBaseSeconds),
      '--max-attempts', String(opts.maxAttempts),
    ];
    const logFile = join(logDir, 'fleet.log');
    fleet = new Fleet(env, runId, logFile, t0, supervisorArgs);
    fleet.startSupervisor();
    for (let i = 0; i < opts.workers; i++) fleet.startWorker();
    say(`${opts.workers} workers and a supervisor started; providers at ${simulator.url}`);

    // Bundles, each with an idempotency key so that a batch retried across the restart is enqueued once.
    const soldOutEvery = opts.soldOutShare > 0 ? 1 / opts.soldOutShare : Infinity;
    const items = Array.from({ length: opts.bundles }, (_, i) => ({
      payload: payload(i, Math.floor((i + 1) / soldOutEvery) > Math.floor(i / soldOutEvery)),
      idempotencyKey: `chaos:${runId}:${i}`,
    }));
    const ids: string[] = [];
    const enqueueSeconds = opts.enqueueSeconds ?? opts.seconds * 0.8;
    const chaosStart = Date.now();
    const enqueuer = (async () => {
      // Batches about every 250 ms, spread evenly over the enqueue window.
      const batches = Math.max(1, Math.min(items.length, Math.floor((enqueueSeconds * 1000) / 250)));
      const perBatch = Math.ceil(items.length / batches);
      const every = (enqueueSeconds * 1000) / Math.ceil(items.length / perBatch);
      for (let n = 0, start = 0; start < items.length; n++, start += perBatch) {
        const batch = items.slice(start, start + perBatch);
        const results = await retrying(() => enqueueBundles(pool!, batch, { actor: 'chaos', kindVersion: 1 }), signal, 120_000);
        ids.push(...results.map((r) => r.vip_bundle_id));
        const next = chaosStart + (n + 1) * every;
        if (start + perBatch < items.length && next > Date.now()) await delay(next - Date.now(), undefined, { signal });
      }
    })();

    // The chaos: a SIGKILL every interval, and one immediate PostgreSQL restart.
    const kills: Kill[] = [];
    const chaosMs = opts.seconds * 1000;
    // --kills N: N kills evenly spread over the window; otherwise one every killEveryMs (±25 %).
    const killEvery = opts.kills !== undefined ? (opts.kills > 0 ? chaosMs / (opts.kills + 1) : Infinity) : opts.killEveryMs;
    const jitter = opts.kills === undefined ? 0.5 : 0;
    let restartInfo: ChaosSummary['pg_restart'] = null;
    let restartWindow: [number, number] | undefined;
    const restarter = (async () => {
      if (!opts.restart) return;
      if (!home) {
        restartInfo = { skipped: 'external database (--database-url / DATABASE_URL)' };
        return;
      }
      await delay(chaosMs * opts.restartAt, undefined, { signal });
      // No worker may be starting up when the server goes away (it would rightly refuse to start).
      fleet!.pause();
      while (Date.now() - fleet!.lastSpawnAt < 3000) await delay(100, undefined, { signal });
      const started = Date.now();
      say('restarting PostgreSQL (immediate)');
      try {
        await restartEmbeddedPostgres(home, 'immediate', SERVER_SETTINGS);
      } finally {
        fleet!.resume();
      }
      restartWindow = [started, Date.now()];
      restartInfo = { at_s: (started - t0) / 1000, downtime_ms: Date.now() - started };
      say(`PostgreSQL back after ${Date.now() - started} ms`);
    })();
    // Awaited below; marked handled now so an early failure is not an unhandled rejection.
    enqueuer.catch(() => {});
    restarter.catch(() => {});
    let nextKill = chaosStart + Math.min(killEvery, chaosMs);
    while (Date.now() < chaosStart + chaosMs && kills.length < (opts.kills ?? Infinity)) {
      const wait = Math.min(nextKill, chaosStart + chaosMs) - Date.now();
      if (wait > 0) await delay(wait, undefined, { signal });
      if (Date.now() < nextKill) continue;
      nextKill += killEvery * (1 - jitter / 2 + random() * jitter);
      const candidates = fleet.workers();
      if (!candidates.length) continue;
      const victim = candidates[Math.floor(random() * candidates.length)]!;
      const at = Date.now();
      await fleet.kill(victim);
      kills.push({ name: victim.name, at });
      fleet.startWorker();
      say(`SIGKILLed ${victim.name}`);
    }
    if (Date.now() < chaosStart + chaosMs) await delay(chaosStart + chaosMs - Date.now(), undefined, { signal });
    await restarter;
    await enqueuer;
    const chaosEnd = Date.now();
    say(`chaos over after ${kills.length} kills; waiting for every bundle to finish`);

    // Settle: every bundle terminal, bounded; then the supervisor's alert for every dead one.
    const settleDeadline = Date.now() + opts.settleSeconds * 1000;
    let states: Record<string, number> = {};
    for (;;) {
      states = await retrying(() => countStates(pool!, ids), signal);
      const terminal = TERMINAL.reduce((n, s) => n + (states[s] ?? 0), 0);
      if (terminal === ids.length || Date.now() > settleDeadline) break;
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
    await fleet.stopAll();
    say('fleet stopped; checking');

    const ledger = simulator.ledger();
    const violations = await checkInvariants(pool, ledger, ids);
    const crashes = fleet.unexpected;
    if (crashes.length) {
      violations.push({ invariant: 'fleet survives', message: `fleet processes died on their own: ${crashes.map((c) => `${c.process} (code ${c.code}, signal ${c.signal}, at ${c.at_s.toFixed(1)} s)`).join('; ')}`, count: crashes.length, bundle_ids: [] });
    }
    const recovery = await measureRecovery(pool, kills, restartWindow, opts.recoveryTargetMs);
    const { rows: timing } = await pool.query<{ first: Date; last: Date | null }>('SELECT min(created_at) AS first, max(finished_at) AS last FROM bundles WHERE id = ANY($1::uuid[])', [ids]);
    const { rows: resetRows } = await pool.query<{ reason: string; n: string }>(
      `SELECT reason, count(*) AS n FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND (reason LIKE 'owner gone%' OR reason LIKE 'lease expired%') GROUP BY reason`,
      [ids],
    );
    const resetCount = (prefix: string) => resetRows.filter((r) => r.reason.startsWith(prefix)).reduce((n, r) => n + Number(r.n), 0);
    const terminalCount = TERMINAL.reduce((n, s) => n + (states[s] ?? 0), 0);
    const busySeconds = timing[0]?.first && timing[0]?.last ? (timing[0].last.getTime() - timing[0].first.getTime()) / 1000 : 0;
    const deadIds = new Set((await pool.query<{ id: string }>(`SELECT id FROM bundles WHERE id = ANY($1::uuid[]) AND state = 'dead'`, [ids])).rows.map((r) => r.id));
    const cpuList = cpus();
    const summary: ChaosSummary = {
      ok: violations.length === 0,
      bundles: opts.bundles,
      enqueued: ids.length,
      states,
      violations,
      recovery,
      pg_restart: restartInfo,
      unexpected_exits: crashes,
      ledger: {
        entries: ledger.length,
        booked: ledger.filter((e) => e.status === 'booked').length,
        cancelled: ledger.filter((e) => e.status === 'cancelled').length,
        refused: ledger.filter((e) => e.status === 'refused').length,
        book_calls: ledger.reduce((n, e) => n + e.book_calls, 0),
        replayed_keys: ledger.filter((e) => e.book_calls > 1).length,
        live_for_dead: ledger.filter((e) => e.status === 'booked' && deadIds.has(e.idempotency_key.split(':')[0]!)).length,
      },
      supervisor_resets: { owner_gone: resetCount('owner gone'), lease_expired: resetCount('lease expired') },
      duration_s: (Date.now() - t0) / 1000,
      chaos_s: (chaosEnd - chaosStart) / 1000,
      settle_s: (settledAt - chaosEnd) / 1000,
      throughput_bundles_per_s: busySeconds > 0 ? Math.round((terminalCount / busySeconds) * 100) / 100 : 0,
      settings: {
        bundles: opts.bundles,
        workers: opts.workers,
        concurrency_per_worker: opts.concurrency,
        kills: opts.kills ?? 'every interval',
        kill_every_ms: Number.isFinite(killEvery) ? Math.round(killEvery) : null,
        seconds: opts.seconds,
        enqueue_seconds: enqueueSeconds,
        fail_rate: opts.failRate,
        late_rate: opts.lateRate,
        hang_rate: opts.hangRate,
        no_rate: opts.noRate,
        sold_out_share: opts.soldOutShare,
        latency_ms: opts.latencyMs,
        hang_ms: opts.hangMs,
        provider_timeout_ms: opts.providerTimeoutMs,
        lease_seconds: opts.leaseSeconds,
        poll_interval_ms: opts.pollIntervalMs,
        supervise_interval_seconds: opts.superviseIntervalSeconds,
        backoff_base_seconds: opts.backoffBaseSeconds,
        max_attempts: opts.maxAttempts,
        pg_restart: opts.restart,
        seed: opts.seed,
        database: home ? `embedded (dedicated, ${Object.entries(SERVER_SETTINGS).map(([k, v]) => `${k}=${v}`).join(' ')})` : 'external',
      },
      machine: {
        os: `${platform()} ${release()}`,
        arch: arch(),
        cpus: cpuList.length,
        cpu_model: cpuList[0]?.model ?? 'unknown',
        node: process.version,
        postgres,
      },
    };
    keepLogs = !summary.ok;
    if (keepLogs) summary.logs = logDir;
    return summary;
  } finally {
    say('cleaning up');
    await fleet?.stopAll(3000).catch(() => {});
    process.off('exit', exitHook);
    await simulator?.close().catch(() => {});
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

// ---- command line ----

const num = (name: string, min: number, max: number, int = false) =>
  z
    .string()
    .trim()
    .regex(/^[-+]?(\d+\.?\d*|\.\d+)$/, `${name}: must be a number`)
    .transform(Number)
    .pipe(
      (int ? z.number().int(`${name}: must be a whole number`) : z.number())
        .min(min, `${name}: must be at least ${min}`)
        .max(max, `${name}: must be at most ${max}`),
    );

const FLAGS = {
  bundles: num('--bundles', 1, 1_000_000, true),
  workers: num('--workers', 1, 64, true),
  kills: num('--kills', 0, 100_000, true),
  'kill-every-ms': num('--kill-every-ms', 100, 3_600_000, true),
  seconds: num('--seconds', 1, 86_400),
  'fail-rate': num('--fail-rate', 0, 1),
  'late-rate': num('--late-rate', 0, 1),
  'hang-rate': num('--hang-rate', 0, 1),
  'no-rate': num('--no-rate', 0, 1),
  'latency-ms': num('--latency-ms', 0, 60_000, true),
  'hang-ms': num('--hang-ms', 0, 600_000, true),
  'provider-timeout-ms': num('--provider-timeout-ms', 1, 600_000, true),
  seed: num('--seed', -2_147_483_648, 2_147_483_647, true),
  concurrency: num('--concurrency', 1, 1000, true),
  'lease-seconds': num('--lease-seconds', 1, 86_400, true),
  'enqueue-seconds': num('--enqueue-seconds', 0, 86_400),
  'settle-seconds': num('--settle-seconds', 1, 86_400),
  'sold-out-share': num('--sold-out-share', 0, 1),
  'restart-at': num('--restart-at', 0, 1),
} as const;

const USAGE = `usage: npm run chaos -- --bundles N --workers K --seconds S [options]
  --kills N               SIGKILLs in total, spread over the window (default: one every --kill-every-ms)
  --kill-every-ms MS      interval between SIGKILLs (default 2000)
  --fail-rate R --late-rate R --hang-rate R --no-rate R   provider faults (0..1)
  --latency-ms MS         provider latency (default ${DEFAULTS.latencyMs})
  --seed N                fault pattern and victims (default 1)
  --concurrency N         agents per worker (default ${DEFAULTS.concurrency})
  --enqueue-seconds S     spread enqueueing over S seconds (default 80 % of --seconds; 0 = all at once)
  --settle-seconds S      wait at most S seconds after the chaos for every bundle (default ${DEFAULTS.settleSeconds})
  --no-restart            no PostgreSQL restart
  --database-url URL      use this database instead of a dedicated embedded server (no restart)
  --json                  print only the JSON summary
Exit codes: 0 all invariants hold, 1 a violation or a timeout, 2 bad usage.`;

export function parseChaosArgs(argv: string[]): ChaosOptions {
  const options = Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }]));
  const { values } = parseArgs({
    args: argv,
    options: { ...options, 'no-restart': { type: 'boolean' }, 'database-url': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) throw new UsageError(USAGE, 0);
  const issues: string[] = [];
  const parsed: Record<string, number> = {};
  for (const [flag, schema] of Object.entries(FLAGS)) {
    const raw = (values as Record<string, unknown>)[flag];
    if (raw === undefined) continue;
    const r = schema.safeParse(raw);
    if (r.success) parsed[flag] = r.data;
    else issues.push(`${r.error.issues[0]?.message ?? flag} (got ${JSON.stringify(raw)})`);
  }
  for (const required of ['bundles', 'workers', 'seconds']) if (parsed[required] === undefined && !issues.some((i) => i.startsWith(`--${required}`))) issues.push(`--${required}: required`);
  if (issues.length) throw new UsageError(`bad usage:\n  ${issues.join('\n  ')}\n${USAGE}`, 2);
  const databaseUrl = (values['database-url'] as string | undefined) ?? (process.env.DATABASE_URL?.trim() || undefined);
  return {
    ...DEFAULTS,
    bundles: parsed.bundles!,
    workers: parsed.workers!,
    seconds: parsed.seconds!,
    kills: parsed.kills,
    killEveryMs: parsed['kill-every-ms'] ?? DEFAULTS.killEveryMs,
    failRate: parsed['fail-rate'] ?? 0,
    lateRate: parsed['late-rate'] ?? 0,
    hangRate: parsed['hang-rate'] ?? 0,
    noRate: parsed['no-rate'] ?? 0,
    latencyMs: parsed['latency-ms'] ?? DEFAULTS.latencyMs,
    hangMs: parsed['hang-ms'] ?? DEFAULTS.hangMs,
    providerTimeoutMs: parsed['provider-timeout-ms'] ?? DEFAULTS.providerTimeoutMs,
    seed: parsed.seed ?? DEFAULTS.seed,
    concurrency: parsed.concurrency ?? DEFAULTS.concurrency,
    leaseSeconds: parsed['lease-seconds'] ?? DEFAULTS.leaseSeconds,
    enqueueSeconds: parsed['enqueue-seconds'],
    settleSeconds: parsed['settle-seconds'] ?? DEFAULTS.settleSeconds,
    soldOutShare: parsed['sold-out-share'] ?? DEFAULTS.soldOutShare,
    restartAt: parsed['restart-at'] ?? DEFAULTS.restartAt,
    restart: !values['no-restart'],
    databaseUrl,
    verbose: !values.json,
  };
}

class UsageError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

async function main(argv: string[]): Promise<number> {
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
    if (!json) {
      const r = summary.recovery;
      process.stderr.write(
        summary.ok
          ? `chaos: OK — ${summary.enqueued} bundles terminal (${Object.entries(summary.states).map(([s, n]) => `${s} ${n}`).join(', ')}), ${r.kills} kills, recovery p50 ${r.p50_ms} ms / max ${r.max_ms} ms\n`
          : `chaos: FAILED — ${summary.violations.map((v) => `${v.invariant}: ${v.message} (${v.count}${v.bundle_ids.length ? `: ${v.bundle_ids.slice(0, 5).join(', ')}${v.count > 5 ? ', …' : ''}` : ''})`).join('; ')}\n`,
      );
    }
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
