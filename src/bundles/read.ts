/** Read models for `inspect`, `list`, `stats`, the HTTP API and the status page. */
import type { Queryable } from '../db/pool.js';
import { NotFound } from '../errors.js';
import { bundleKind, carriedKindVersions } from './kinds.js';
import { parseBundleId } from './input.js';
import { providerFlowStats, type ProviderFlowView } from '../providers/limits.js';
import { traceIdOf } from '../tracing.js';

export const BUNDLE_STATES = ['pending', 'running', 'waiting', 'failed', 'compensating', 'completed', 'compensated', 'dead'] as const;
export type BundleState = (typeof BUNDLE_STATES)[number];
export const TERMINAL_STATES: readonly BundleState[] = ['completed', 'compensated', 'dead'];

/**
 * The payload fields shown by `inspect`, `list` and the API: what was booked, never who for
 * (customer_email and passenger names stay out; only the number of passengers is shown).
 */
export interface PublicPayload {
  show_id?: string;
  number_of_tickets?: number;
  inbound_flight_id?: string;
  return_flight_id?: string;
  passenger_count?: number;
}

const PUBLIC_FIELDS = ['show_id', 'number_of_tickets', 'inbound_flight_id', 'return_flight_id'] as const;

export function publicPayload(payload: Record<string, unknown> | null | undefined): PublicPayload {
  const out: Record<string, unknown> = {};
  for (const f of PUBLIC_FIELDS) if (payload?.[f] !== undefined) out[f] = payload[f];
  if (Array.isArray(payload?.passengers)) out.passenger_count = payload.passengers.length;
  return out as PublicPayload;
}

export interface BundleView {
  vip_bundle_id: string;
  booking_id: string;
  kind: string;
  kind_version: number;
  payload: PublicPayload;
  state: BundleState;
  phase: 'book' | 'undo';
  attempt: number;
  failure_count: number;
  undo_failure_count: number;
  reset_count: number;
  locked_by: string | null;
  locked_until: string | null;
  next_run_at: string;
  last_error: string | null;
  last_error_class: string | null;
  last_error_step: string | null;
  /** Set while the bundle waits for a provider window (parked: no worker held, no failure counted). */
  parked: { until: string; since: string | null; provider: string | null; reason: string } | null;
  created_at: string;
  /** The last change of the bundle's state, attempt or phase (a step's progress updates only its step). */
  updated_at: string;
  /**
   * When it became completed, compensated or dead; null while unfinished (a retry clears it).
   * Unlike updated_at it stays put when a failure is acknowledged (`ack`).
   */
  finished_at: string | null;
  /** At most one unfinished (or failed and unacknowledged) bundle holds an active key: bundles/active-keys.ts. */
  active_key: string | null;
  /** When an operator acknowledged this compensated or dead bundle's failure (`ack`). */
  failure_acked_at: string | null;
  /** OpenTelemetry trace id of the bundle's trace; null when it was enqueued with tracing off. */
  trace_id: string | null;
  steps: Array<{ name: string; status: string; reference: string | null; idempotency_key: string | null; error: string | null }>;
  history: Array<{ at: string; actor: string; attempt: number; from_state: string | null; to_state: string; step: string | null; reason: string; error: string | null }>;
  /** Provider requests and replies, oldest first (the newest MAX_EXCHANGES_SHOWN), bodies redacted and bounded. */
  exchanges: ExchangeView[];
  /** Older exchanges not shown. */
  exchanges_omitted: number;
}

export interface ExchangeView {
  at: string;
  attempt: number | null;
  worker_id: string | null;
  step: string | null;
  provider: string;
  operation: string;
  method: string;
  path: string;
  status: number | null;
  outcome: 'ok' | 'transient' | 'permanent';
  error: string | null;
  duration_ms: number;
  request_body: string | null;
  response_body: string | null;
}

export const MAX_EXCHANGES_SHOWN = 200;

const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : v === null || v === undefined ? null : String(v));

/** One bundle by vip_bundle_id or booking_id, with its steps and timeline. Throws NotFound. */
export async function inspectBundle(db: Queryable, rawId: string): Promise<BundleView> {
  const id = parseBundleId(rawId);
  const { rows } = await db.query('SELECT * FROM bundles WHERE id = $1 OR booking_id = $1', [id]);
  const b = rows[0];
  if (!b) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
  const [steps, history, exchanges] = await Promise.all([
    db.query('SELECT position, name, status, reference, idempotency_key, error FROM steps WHERE bundle_id = $1 ORDER BY position', [b.id]),
    db.query('SELECT at, actor, attempt, from_state, to_state, step, reason, error FROM bundle_history WHERE bundle_id = $1 ORDER BY id', [b.id]),
    db.query<ExchangeView & { total: string }>(
      `SELECT at, attempt, worker_id, step, provider, operation, method, path, status, outcome, error, duration_ms, request_body, response_body,
              count(*) OVER () AS total
       FROM provider_exchanges WHERE bundle_id = $1 ORDER BY id DESC LIMIT $2`,
      [b.id, MAX_EXCHANGES_SHOWN],
    ),
  ]);
  // A version this build does not carry still shows its recorded steps.
  let defs: Array<{ name: string }>;
  try {
    defs = bundleKind(b.kind, b.kind_version).steps;
  } catch {
    defs = steps.rows.map((r) => ({ name: r.name }));
  }
  return {
    vip_bundle_id: b.id,
    booking_id: b.booking_id,
    kind: b.kind,
    kind_version: b.kind_version,
    payload: publicPayload(b.payload),
    state: b.state,
    phase: b.phase,
    attempt: b.attempt,
    failure_count: b.failure_count,
    undo_failure_count: b.undo_failure_count,
    reset_count: b.reset_count,
    locked_by: b.locked_by,
    locked_until: iso(b.locked_until),
    next_run_at: iso(b.next_run_at)!,
    last_error: b.last_error,
    last_error_class: b.last_error_class,
    last_error_step: b.last_error_step,
    parked: parkedView(b),
    created_at: iso(b.created_at)!,
    updated_at: iso(b.updated_at)!,
    finished_at: iso(b.finished_at),
    trace_id: traceIdOf(b.trace_context),
    // Every step of the kind, in order; one without a row has not been started (or has no external effect).
    steps: defs.map((def, position) => {
      const row = steps.rows.find((r) => r.position === position);
      const status = row?.status ?? (b.state === 'completed' ? 'booked' : 'pending');
      return { name: def.name, status, reference: row?.reference ?? null, idempotency_key: row?.idempotency_key ?? null, error: row?.error ?? null };
    }),
    history: [...enqueueEntry(b), ...history.rows.map((h) => ({ ...h, at: iso(h.at)! }))],
    active_key: b.active_key ?? null,
    failure_acked_at: iso(b.failure_acked_at),
    exchanges: exchanges.rows.reverse().map(({ total: _, ...e }) => ({ ...e, at: iso(e.at)! })),
    exchanges_omitted: Math.max(0, Number(exchanges.rows[0]?.total ?? 0) - exchanges.rows.length),
  };
}

/**
 * The enqueue's timeline entry, which the bundle row keeps (sql/010_enqueued_by.sql): the same
 * fields its history row had. None for a bundle enqueued before 010, whose history row says it.
 */
function enqueueEntry(b: Record<string, unknown>): BundleView['history'] {
  if (typeof b.enqueued_by !== 'string') return [];
  return [{ at: iso(b.created_at)!, actor: b.enqueued_by, attempt: 0, from_state: null, to_state: 'pending', step: null, reason: 'enqueued', error: null }];
}

/** A bundle is parked while it waits (pending or compensating) for the time its last park set. */
function parkedView(b: Record<string, unknown>): BundleView['parked'] {
  const until = b.parked_until as Date | null;
  const next = b.next_run_at as Date;
  if (!until || !['pending', 'compensating'].includes(b.state as string) || until.getTime() !== next.getTime()) return null;
  return { until: until.toISOString(), since: iso(b.parked_since), provider: (b.parked_provider as string | null) ?? null, reason: (b.parked_reason as string | null) ?? '' };
}

export interface ListedBundle {
  vip_bundle_id: string;
  booking_id: string;
  kind: string;
  payload: PublicPayload;
  state: BundleState;
  attempt: number;
  failure_count: number;
  last_error: string | null;
  created_at: string;
  /** The last change of the bundle's state, attempt or phase (a step's progress updates only its step). */
  updated_at: string;
}

export interface ListOptions {
  state?: BundleState;
  limit?: number;
  /** Changed at or after this time. */
  since?: Date;
  /** The next page: bundles listed after this one (by last change, newest first). */
  after?: string;
}

/**
 * Bundles by last change, newest first. Paging is keyset on (updated_at, id) from the `after`
 * bundle's current position, so a bundle that changes while you page moves to the front.
 */
export async function listBundles(db: Queryable, opts: ListOptions = {}): Promise<ListedBundle[]> {
  const after = opts.after === undefined ? null : parseBundleId(opts.after, 'after');
  if (after) {
    const { rowCount } = await db.query('SELECT 1 FROM bundles WHERE id = $1', [after]);
    if (!rowCount) throw new NotFound(`no bundle with vip_bundle_id ${after} to page after`);
  }
  const { rows } = await db.query(
    `SELECT id AS vip_bundle_id, booking_id, kind, payload, state, attempt, failure_count, last_error, created_at, updated_at
     FROM bundles
     WHERE ($1::text IS NULL OR state = $1) AND ($3::timestamptz IS NULL OR updated_at >= $3)
       AND ($4::uuid IS NULL OR (updated_at, id) < (SELECT updated_at, id FROM bundles WHERE id = $4))
     ORDER BY updated_at DESC, id DESC LIMIT $2`,
    [opts.state ?? null, opts.limit ?? 20, opts.since ?? null, after],
  );
  return rows.map((r) => ({ ...r, payload: publicPayload(r.payload), created_at: iso(r.created_at)!, updated_at: iso(r.updated_at)! }));
}

export interface FleetStats {
  by_state: Record<BundleState, number>;
  total: number;
  oldest_due_pending_age_seconds: number | null;
  open_alerts: number;
  completed_last_minute: number;
  /** Non-terminal bundles of kind versions this build does not carry. */
  unrunnable_kind_versions: KindVersionCount[];
  /** Per provider kind: its fleet-wide limits, slots in use, pause and parked bundles. */
  providers: ProviderFlowView[];
}

export interface KindVersionCount {
  kind: string;
  version: number;
  bundles: number;
}

/**
 * Unfinished bundles of kind versions not in `carried` (default: this build's): non-terminal ones,
 * and undone ones whose reconciliation pass is still due (it needs their version's step list, and
 * a worker claims only passes of versions it carries; invariant 8). No worker of this build will
 * run them: after a deploy that dropped a version too early they wait for a worker that carries
 * it. `stats`, the status page and the workers' logs and metrics say so, and `migrate` and
 * `worker` refuse to start (cli/kind-check.ts).
 */
export async function unrunnableKindVersions(db: Queryable, carried = carriedKindVersions(), opts: { claimableOnly?: boolean } = {}): Promise<KindVersionCount[]> {
  // claimableOnly: what a worker checks every 30 s — the claim index's literal condition, so it
  // costs an index scan, not a scan of the table.
  // Each arm is the literal condition of a partial index (bundles_claim_idx or
  // bundles_unfinished_idx and bundles_waiting_idx, and bundles_reconcile_idx), so the planner
  // ORs their bitmaps. `state NOT IN (terminal states)` matched none of them: a scan of the whole
  // table, 34 ms for 200,000 finished bundles against 0.2 ms, on every `stats` and status-page poll.
  const which = opts.claimableOnly
    ? `(state IN ('pending', 'compensating') OR reconcile_at IS NOT NULL)`
    : `(state IN ('pending', 'running', 'failed', 'compensating') OR state = 'waiting' OR reconcile_at IS NOT NULL)`;
  const { rows } = await db.query<{ kind: string; version: number; bundles: string }>(
    `SELECT kind, kind_version AS version, count(*) AS bundles FROM bundles
     WHERE ${which}
       AND (kind, kind_version) NOT IN (SELECT * FROM unnest($1::text[], $2::int[]))
     GROUP BY kind, kind_version ORDER BY kind, kind_version`,
    [carried.map((k) => k.kind), carried.map((k) => k.version)],
  );
  return rows.map((r) => ({ kind: r.kind, version: r.version, bundles: Number(r.bundles) }));
}

export async function fleetStats(db: Queryable): Promise<FleetStats> {
  const [states, due, alerts, recent, unrunnable, providers] = await Promise.all([
    db.query<{ state: BundleState; n: string }>('SELECT state, count(*) AS n FROM bundles GROUP BY state'),
    // Same literal condition as the claim, so the claim index serves it.
    db.query<{ age: number | null }>(
      `SELECT extract(epoch FROM now() - min(next_run_at))::float8 AS age FROM bundles
       WHERE state IN ('pending', 'compensating') AND next_run_at <= now()`,
    ),
    db.query<{ n: string }>('SELECT count(*) AS n FROM alerts WHERE resolved_at IS NULL AND acked_at IS NULL'),
    db.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE finished_at > now() - interval '1 minute' AND state = 'completed'`),
    unrunnableKindVersions(db),
    providerFlowStats(db),
  ]);
  const by_state = Object.fromEntries(BUNDLE_STATES.map((s) => [s, 0])) as Record<BundleState, number>;
  for (const r of states.rows) by_state[r.state] = Number(r.n);
  return {
    by_state,
    total: Object.values(by_state).reduce((a, b) => a + b, 0),
    oldest_due_pending_age_seconds: due.rows[0]?.age ?? null,
    open_alerts: Number(alerts.rows[0]?.n ?? 0),
    completed_last_minute: Number(recent.rows[0]?.n ?? 0),
    unrunnable_kind_versions: unrunnable,
    providers,
  };
}

export interface ThroughputPoint {
  minute: string;
  completed: number;
  failed: number;
}

/** Bundles that finished in each of the last `minutes` minutes (oldest first): completed, and compensated or dead. */
export async function throughputByMinute(db: Queryable, minutes: number): Promise<ThroughputPoint[]> {
  const { rows } = await db.query<{ minute: Date; completed: string; failed: string }>(
    `SELECT m.minute,
            count(b.id) FILTER (WHERE b.state = 'completed') AS completed,
            count(b.id) FILTER (WHERE b.state IN ('compensated', 'dead')) AS failed
     FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1), date_trunc('minute', now()), interval '1 minute') AS m(minute)
     LEFT JOIN bundles b ON b.finished_at >= m.minute AND b.finished_at < m.minute + interval '1 minute'
     GROUP BY m.minute ORDER BY m.minute`,
    [minutes],
  );
  return rows.map((r) => ({ minute: r.minute.toISOString(), completed: Number(r.completed), failed: Number(r.failed) }));
}
