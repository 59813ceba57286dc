/**
 * The JSON summary of a chaos run: states, violations, recovery figures, what each fault did,
 * the ledger's counts, timings, settings and the machine, so a run's figures can be compared.
 */
import { arch, cpus, platform, release } from 'node:os';
import type pg from 'pg';
import type { LedgerEntry, ProviderSimulator } from '../providers/simulator.js';
import type { RunFaults } from './faults/index.js';
import { SERVER_SETTINGS } from './faults/pg-restart.js';
import type { Fleet } from './fleet.js';
import { TERMINAL } from './invariants.js';
import { DEAD_ALLOWED_FROM_FAIL_RATE, type ChaosOptions, type ChaosSummary, type Violation } from './options.js';
import { measureRecovery } from './recovery.js';

export interface RunFacts {
  opts: ChaosOptions;
  pool: pg.Pool;
  ids: string[];
  ledger: LedgerEntry[];
  simulator: ProviderSimulator;
  fleet: Fleet;
  faults: RunFaults;
  violations: Violation[];
  states: Record<string, number>;
  supervisors: number;
  home: string | undefined;
  postgres: string;
  times: { t0: number; chaosStart: number; chaosEnd: number; settledAt: number };
  enqueueSeconds: number;
}

export async function summarize(f: RunFacts): Promise<ChaosSummary> {
  const { opts, pool, ids, ledger, simulator, fleet, faults, violations, states, home, postgres } = f;
  const { t0, chaosStart, chaosEnd, settledAt } = f.times;
  const enqueueSeconds = f.enqueueSeconds;
  const crashes = fleet.unexpected;
  const restartWindow = faults.restart?.window;
  const recovery = await measureRecovery(pool, faults.kills.kills, restartWindow, opts.recoveryTargetMs);
  const pauseRecovery = faults.pauses ? await measureRecovery(pool, faults.pauses.workerPauses, restartWindow, opts.leaseSeconds * 1000 + 2000) : undefined;
  const { rows: timing } = await pool.query<{ first: Date; last: Date | null }>('SELECT min(created_at) AS first, max(finished_at) AS last FROM bundles WHERE id = ANY($1::uuid[])', [ids]);
  const { rows: resetRows } = await pool.query<{ reason: string; n: string }>(
    `SELECT reason, count(*) AS n FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND (reason LIKE 'owner gone%' OR reason LIKE 'lease expired%') GROUP BY reason`,
    [ids],
  );
  const resetCount = (prefix: string) => resetRows.filter((r) => r.reason.startsWith(prefix)).reduce((n, r) => n + Number(r.n), 0);
  const terminalCount = TERMINAL.reduce((n, s) => n + (states[s] ?? 0), 0);
  const busySeconds = timing[0]?.first && timing[0]?.last ? (timing[0].last.getTime() - timing[0].first.getTime()) / 1000 : 0;
  const { rows: undone } = await pool.query<{ id: string; state: string }>(`SELECT id, state FROM bundles WHERE id = ANY($1::uuid[]) AND state IN ('dead', 'compensated')`, [ids]);
  const undoneState = new Map(undone.map((r) => [r.id, r.state]));
  const liveFor = (state: string) => ledger.filter((e) => e.status === 'booked' && undoneState.get(e.idempotency_key.split(':')[0]!) === state).length;
  // Waiting bundles (vip v2): how many waited for their ticketing confirmations, and how many waits timed out.
  const { rows: waitRows } = await pool.query<{ waited: number; timed_out: number; signals: number }>(
    `SELECT (SELECT count(DISTINCT bundle_id)::int FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND to_state = 'waiting') AS waited,
            (SELECT count(*)::int FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND reason = 'wait timed out → compensating') AS timed_out,
            (SELECT count(*)::int FROM bundle_signals WHERE bundle_id = ANY($1::uuid[])) AS signals`,
    [ids],
  );
  const cpuList = cpus();
  const summary: ChaosSummary = {
    waiting: waitRows[0]!,
    ok: violations.length === 0,
    bundles: opts.bundles,
    enqueued: ids.length,
    states,
    violations,
    recovery,
    ...(pauseRecovery ? { pause_recovery: pauseRecovery } : {}),
    pg_restart: faults.restart?.info ?? null,
    faults: Object.fromEntries(faults.all.map((f) => [f.name, f.report()])),
    unexpected_exits: crashes,
    ledger: {
      entries: ledger.length,
      booked: ledger.filter((e) => e.status === 'booked').length,
      cancelled: ledger.filter((e) => e.status === 'cancelled').length,
      refused: ledger.filter((e) => e.status === 'refused').length,
      book_calls: ledger.reduce((n, e) => n + e.book_calls, 0),
      replayed_keys: ledger.filter((e) => e.book_calls > 1).length,
      live_for_dead: liveFor('dead'),
      live_for_compensated: liveFor('compensated'),
      ...simulator.counters(),
    },
    supervisor_resets: { owner_gone: resetCount('owner gone'), lease_expired: resetCount('lease expired') },
    duration_s: (Date.now() - t0) / 1000,
    chaos_s: (chaosEnd - chaosStart) / 1000,
    settle_s: (settledAt - chaosEnd) / 1000,
    throughput_bundles_per_s: busySeconds > 0 ? Math.round((terminalCount / busySeconds) * 100) / 100 : 0,
    settings: {
      bundles: opts.bundles,
      workers: opts.workers,
      supervisors: f.supervisors,
      concurrency_per_worker: opts.concurrency,
      fault_modes: opts.modes,
      kills: opts.kills ?? 'every interval',
      kill_every_ms: faults.kills.report().every_ms,
      seconds: opts.seconds,
      enqueue_seconds: enqueueSeconds,
      fail_rate: opts.failRate,
      late_rate: opts.lateRate,
      hang_rate: opts.hangRate,
      no_rate: opts.noRate,
      slow_rate: opts.slowRate ?? 0,
      sold_out_share: opts.soldOutShare,
      latency_ms: opts.latencyMs,
      hang_ms: opts.hangMs,
      provider_timeout_ms: opts.providerTimeoutMs,
      lease_seconds: opts.leaseSeconds,
      poll_interval_ms: opts.pollIntervalMs,
      supervise_interval_seconds: opts.superviseIntervalSeconds,
      backoff_base_seconds: opts.backoffBaseSeconds,
      max_attempts: opts.maxAttempts,
      max_undo_attempts: opts.maxUndoAttempts,
      dead_allowed: opts.failRate >= DEAD_ALLOWED_FROM_FAIL_RATE,
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
  return summary;
}
