/**
 * The SQL of fleet-wide flow control per provider kind (sql/008_flow_control.sql): one named
 * function per statement. Limits and pauses live in PostgreSQL so that every worker process on
 * every machine obeys the same ones; each statement is short and touches one kind's rows.
 */
import type { Queryable } from '../db/pool.js';
import type { ProviderKind } from './client.js';

export interface ProviderLimit {
  /** Most calls to the kind in flight at once, fleet-wide. */
  maxInFlight?: number;
  /** Most calls per second to the kind, fleet-wide. */
  ratePerSecond?: number;
}

export type ProviderLimits = Partial<Record<ProviderKind, ProviderLimit>>;

/**
 * Writes this worker's limits (the last worker started wins; give every worker the same flags) and
 * makes exactly max_in_flight slot rows for each kind with a concurrency limit. A kind this worker
 * does not limit is left as another worker wrote it.
 */
export async function publishLimits(db: Queryable, limits: ProviderLimits, by: string): Promise<void> {
  const kinds = Object.keys(limits) as ProviderKind[];
  if (!kinds.length) return;
  await db.query(
    `WITH input AS (SELECT * FROM unnest($1::text[], $2::int[], $3::float8[]) AS t(kind, max_in_flight, rate_per_second)),
     upsert AS (
       INSERT INTO provider_limits (kind, max_in_flight, rate_per_second, updated_by)
       SELECT kind, max_in_flight, rate_per_second, $4 FROM input
       ON CONFLICT (kind) DO UPDATE SET max_in_flight = EXCLUDED.max_in_flight, rate_per_second = EXCLUDED.rate_per_second,
         updated_by = EXCLUDED.updated_by, updated_at = now()
     ), extra AS (
       DELETE FROM provider_slots s USING input i WHERE s.kind = i.kind AND s.slot >= coalesce(i.max_in_flight, 0)
     )
     INSERT INTO provider_slots (kind, slot)
     SELECT i.kind, n FROM input i, generate_series(0, coalesce(i.max_in_flight, 0) - 1) AS n
     ON CONFLICT (kind, slot) DO NOTHING`,
    [kinds, kinds.map((k) => limits[k]!.maxInFlight ?? null), kinds.map((k) => limits[k]!.ratePerSecond ?? null), by],
  );
}

export interface RateGrant {
  /** Slots reserved (0 when even the first lies beyond the wait allowed). */
  granted: number;
  /** Milliseconds from now until the first slot (≤ 0: now). */
  firstMs: number;
  /** Milliseconds between slots (1000 / rate). */
  stepMs: number;
}

/**
 * Reserves up to `count` consecutive call slots of a kind's rate (GCRA virtual scheduling: the
 * row's next_slot_at moves one interval per slot, never back), only those that start within
 * `maxWaitMs`. One statement however many slots: a worker reserves for all its waiting agents at once.
 */
export async function reserveRateSlots(db: Queryable, kind: ProviderKind, count: number, maxWaitMs: number): Promise<RateGrant | undefined> {
  const { rows } = await db.query<{ granted: number; first_ms: number; step_ms: number }>(
    `WITH cur AS (
       SELECT l.kind, greatest(l.next_slot_at, c.now) AS start, c.now, 1.0 / l.rate_per_second AS step
       FROM provider_limits l, (SELECT clock_timestamp() AS now) c
       WHERE l.kind = $1 AND l.rate_per_second IS NOT NULL
       FOR UPDATE OF l
     ), g AS (
       SELECT cur.*, CASE WHEN cur.start > cur.now + make_interval(secs => $3 / 1000.0) THEN 0
                          ELSE least($2, floor(extract(epoch FROM cur.now + make_interval(secs => $3 / 1000.0) - cur.start) / cur.step)::int + 1) END AS granted
       FROM cur
     ), taken AS (
       UPDATE provider_limits l SET next_slot_at = g.start + make_interval(secs => g.granted * g.step)
       FROM g WHERE l.kind = g.kind AND g.granted > 0
     )
     SELECT granted, (extract(epoch FROM start - now) * 1000)::float8 AS first_ms, (step * 1000)::float8 AS step_ms FROM g`,
    [kind, count, maxWaitMs],
  );
  const r = rows[0];
  return r ? { granted: r.granted, firstMs: r.first_ms, stepMs: r.step_ms } : undefined;
}

/** Leases up to `count` free (or expired) in-flight slots of a kind to `holder` for `ttlMs`; returns their numbers. */
export async function takeSlots(db: Queryable, kind: ProviderKind, holder: string, count: number, ttlMs: number): Promise<number[]> {
  const { rows } = await db.query<{ slot: number }>(
    `UPDATE provider_slots s SET holder = $2, expires_at = clock_timestamp() + make_interval(secs => $4 / 1000.0)
     WHERE (s.kind, s.slot) IN (
       SELECT kind, slot FROM provider_slots
       WHERE kind = $1 AND (holder IS NULL OR expires_at < clock_timestamp())
       LIMIT $3 FOR UPDATE SKIP LOCKED
     )
     RETURNING s.slot`,
    [kind, holder, count, ttlMs],
  );
  return rows.map((r) => r.slot);
}

/** Gives slots back (only those still leased to `holder`: an expired one may already be someone else's). */
export async function releaseSlots(db: Queryable, kind: ProviderKind, holder: string, slots: number[]): Promise<void> {
  if (!slots.length) return;
  await db.query(`UPDATE provider_slots SET holder = NULL, expires_at = NULL WHERE kind = $1 AND slot = ANY($2::int[]) AND holder = $3`, [kind, slots, holder]);
}

export interface ProviderPause {
  kind: ProviderKind;
  /** Milliseconds from now (by the database's clock) until the pause ends. */
  remainingMs: number;
  until: string;
  reason: string;
}

/** Pauses that have not ended yet. */
export async function readPauses(db: Queryable): Promise<ProviderPause[]> {
  const { rows } = await db.query<{ kind: ProviderKind; remaining_ms: number; until: Date; reason: string }>(
    `SELECT kind, (extract(epoch FROM paused_until - clock_timestamp()) * 1000)::float8 AS remaining_ms, paused_until AS until, reason
     FROM provider_pauses WHERE paused_until > clock_timestamp()`,
  );
  return rows.map((r) => ({ kind: r.kind, remainingMs: r.remaining_ms, until: r.until.toISOString(), reason: r.reason }));
}

/**
 * The upsert that pauses a kind: a longer pause wins, a shorter one leaves it as it is. Arguments
 * are the placeholders ($n) that hold the kind, the milliseconds, the reason and who paused, and a
 * condition on placeholders (a park writes the pause only when the provider asked for it).
 */
export function pauseKindSql(p: { kind: string; ms: string; reason: string; by: string; when?: string }): string {
  return `
  INSERT INTO provider_pauses AS p (kind, paused_until, reason, paused_by)
  SELECT ${p.kind}, clock_timestamp() + make_interval(secs => ${p.ms} / 1000.0), ${p.reason}, ${p.by} WHERE ${p.when ?? 'true'}
  ON CONFLICT (kind) DO UPDATE SET
    reason = CASE WHEN EXCLUDED.paused_until > p.paused_until THEN EXCLUDED.reason ELSE p.reason END,
    paused_by = CASE WHEN EXCLUDED.paused_until > p.paused_until THEN EXCLUDED.paused_by ELSE p.paused_by END,
    paused_until = greatest(p.paused_until, EXCLUDED.paused_until),
    updated_at = now()`;
}

/** Pauses a kind fleet-wide for `ms` (the circuit opening; a 429's pause is written with the park). */
export async function pauseKind(db: Queryable, kind: ProviderKind, ms: number, reason: string, by: string): Promise<void> {
  await db.query(pauseKindSql({ kind: '$1::text', ms: '$2::float8', reason: '$3::text', by: '$4::text' }), [kind, ms, reason, by]);
}

export interface ProviderFlowView {
  kind: ProviderKind;
  max_in_flight: number | null;
  rate_per_second: number | null;
  /** Slots leased right now (calls in flight or about to be), fleet-wide. */
  in_flight: number;
  paused_until: string | null;
  pause_reason: string | null;
  /** Bundles parked on this kind's window (waiting for it, holding no worker). */
  parked_bundles: number;
}

/** Limits, slots in use, pauses and parked bundles per provider kind, for `stats`, /metrics and the status page. */
export async function providerFlowStats(db: Queryable): Promise<ProviderFlowView[]> {
  const { rows } = await db.query<ProviderFlowView & { paused_until: Date | null; in_flight: string; parked_bundles: string }>(
    `WITH kinds AS (SELECT unnest(ARRAY['tickets', 'flights', 'taxis']) AS kind),
     parked AS (
       -- Same literal condition as the claim index, over the future part of next_run_at only.
       SELECT parked_provider AS kind, count(*) AS n FROM bundles
       WHERE state IN ('pending', 'compensating') AND next_run_at > now() AND parked_until = next_run_at
       GROUP BY parked_provider
     )
     SELECT k.kind, l.max_in_flight, l.rate_per_second,
            (SELECT count(*) FROM provider_slots s WHERE s.kind = k.kind AND s.holder IS NOT NULL AND s.expires_at > now()) AS in_flight,
            CASE WHEN p.paused_until > now() THEN p.paused_until END AS paused_until,
            CASE WHEN p.paused_until > now() THEN p.reason END AS pause_reason,
            coalesce(pk.n, 0) AS parked_bundles
     FROM kinds k
     LEFT JOIN provider_limits l ON l.kind = k.kind
     LEFT JOIN provider_pauses p ON p.kind = k.kind
     LEFT JOIN parked pk ON pk.kind = k.kind
     ORDER BY k.kind`,
  );
  return rows.map((r) => ({
    kind: r.kind,
    max_in_flight: r.max_in_flight,
    rate_per_second: r.rate_per_second,
    in_flight: Number(r.in_flight),
    paused_until: r.paused_until ? r.paused_until.toISOString() : null,
    pause_reason: r.pause_reason,
    parked_bundles: Number(r.parked_bundles),
  }));
}
