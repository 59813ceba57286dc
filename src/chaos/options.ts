/**
 * What a chaos run is asked to do (ChaosOptions, filled from the command line by cli.ts) and what
 * it reports (ChaosSummary, printed as JSON).
 */

/**
 * The fault modes beyond the classic ones (SIGKILLs, a PostgreSQL restart, provider 5xx, lost
 * replies, hangs and noes, which every run has unless turned off). Each is selected by its own
 * flag (`--pause-workers`, ...); with none given, a run mixes all of them.
 */
export const FAULT_MODES = ['pause-workers', 'half-open', 'forget-cancels', 'concurrent-409', 'silent-webhook', 'row-locks', 'operator-cancels'] as const;
export type FaultMode = (typeof FAULT_MODES)[number];

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
  /** Bookings answered after hangMs (made at once, or as answered with concurrent-409); undefined = 0, or 0.02 with concurrent-409. */
  slowRate?: number;
  /** A rate-limited provider: requests per second per kind, past which it answers 429 with Retry-After. */
  rateLimit?: number;
  latencyMs: number;
  hangMs: number;
  providerTimeoutMs: number;
  seed: number;
  restart: boolean;
  /** When the PostgreSQL restart happens, as a share of the chaos window. */
  restartAt: number;
  /** The fault modes of this run (FAULT_MODES); empty with --classic. */
  modes: FaultMode[];
  /** How long a paused worker stays stopped; default: the lease plus 3 s. */
  pauseMs?: number;
  pauseEveryMs: number;
  halfOpenEveryMs: number;
  /** After a connection is blackholed, when the server side drops it (as its keep-alive would). */
  halfOpenServerDropMs: number;
  rowLockMs: number;
  rowLockEveryMs: number;
  cancelEveryMs: number;
  databaseUrl?: string;
  concurrency: number;
  /** Lease of the fleet; default 5 s with any fault mode (a pause must outlast it), else 60 s. */
  leaseSeconds: number;
  pollIntervalMs: number;
  superviseIntervalSeconds: number;
  backoffBaseSeconds: number;
  maxAttempts: number;
  maxUndoAttempts: number;
  /** Enqueue window in seconds (0 = all at the start); default 80 % of the chaos window. */
  enqueueSeconds?: number;
  /** How long to wait, after the chaos, for every bundle to be terminal. */
  settleSeconds: number;
  soldOutShare: number;
  /**
   * Share of bundles enqueued as vip v2, which wait for the airlines' ticketing confirmations; the
   * simulator sends them to an API the run serves, some late, some twice, some never (those are
   * compensated when their wait times out, after waitTimeoutSeconds).
   */
  waitingShare: number;
  waitTimeoutSeconds: number;
  recoveryTargetMs: number;
  /** Progress lines on stderr. */
  verbose?: boolean;
  /** Keep the fleet's logs also when the run passes. */
  keepLogs?: boolean;
  signal?: AbortSignal;
}

export const DEFAULTS: Omit<ChaosOptions, 'bundles' | 'workers' | 'seconds' | 'leaseSeconds'> = {
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
  modes: [...FAULT_MODES],
  pauseEveryMs: 5000,
  halfOpenEveryMs: 4000,
  halfOpenServerDropMs: 1000,
  rowLockMs: 4000,
  rowLockEveryMs: 1500,
  cancelEveryMs: 1000,
  concurrency: 10,
  pollIntervalMs: 100,
  superviseIntervalSeconds: 1,
  backoffBaseSeconds: 0.2,
  maxAttempts: 5,
  maxUndoAttempts: 10,
  settleSeconds: 120,
  soldOutShare: 0.03,
  waitingShare: 0.2,
  waitTimeoutSeconds: 10,
  recoveryTargetMs: 2000,
};

/** The fleet's lease when none is given: short enough that a pause outlasts it. */
export const defaultLeaseSeconds = (modes: FaultMode[]) => (modes.length ? 5 : 60);

/**
 * "Providers healthy" for the no-dead check. The simulator has no mode in which a cancel fails
 * for good: its only cancel fault is a 503 at --fail-rate, drawn per call. An undo gets
 * --max-undo-attempts attempts of three calls each (10 × 3 by default), so below a fail rate of
 * 0.5 the odds that one key's cancels keep failing are under 1e-9: no bundle may end `dead`.
 */
export const DEAD_ALLOWED_FROM_FAIL_RATE = 0.5;

export interface Violation {
  invariant: string;
  message: string;
  count: number;
  bundle_ids: string[];
}

export interface Kill {
  name: string;
  at: number;
}

export interface RecoveryFigures {
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
}

export interface ChaosSummary {
  /** Bundles that waited for ticketing confirmations (vip v2), waits that timed out, signals stored. */
  waiting: { waited: number; timed_out: number; signals: number };
  ok: boolean;
  bundles: number;
  enqueued: number;
  states: Record<string, number>;
  violations: Violation[];
  recovery: RecoveryFigures;
  /** With --pause-workers: for bundles in flight on a worker when it was SIGSTOPped, the time until another attempt claimed them (target: the lease + 2 s). */
  pause_recovery?: RecoveryFigures;
  pg_restart: { at_s: number; downtime_ms: number } | { skipped: string } | null;
  /** What each fault mode of the run did (pauses, connections cut, locks held, ...). */
  faults: Record<string, Record<string, unknown>>;
  unexpected_exits: Array<{ process: string; code: number | null; signal: string | null; at_s: number }>;
  ledger: { entries: number; booked: number; cancelled: number; refused: number; book_calls: number; replayed_keys: number; live_for_dead: number; live_for_compensated: number; in_progress_conflicts: number; forgotten_cancels: number };
  supervisor_resets: { owner_gone: number; lease_expired: number };
  duration_s: number;
  chaos_s: number;
  settle_s: number;
  throughput_bundles_per_s: number;
  settings: Record<string, unknown>;
  machine: { os: string; arch: string; cpus: number; cpu_model: string; node: string; postgres: string };
  logs?: string;
}
