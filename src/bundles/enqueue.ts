/**
 * Enqueue: one INSERT per batch (unnest) and the events in the same statement, and a NOTIFY so
 * idle schedulers wake at once. The enqueue's timeline entry is the bundle row itself (`created_at`,
 * `enqueued_by`; sql/010_enqueued_by.sql), not a history row.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { withTransaction } from '../db/pool.js';
import { statement } from '../db/statements.js';
import { eventJobsCte } from './events.js';
import { bundleKind, type BundleKind } from './kinds.js';
import { ActiveKeyTaken, findKeyHolders } from './active-keys.js';
import { IdempotencyKeyReused } from '../errors.js';
import { itemName, refuseInconsistentInput, replayDifference } from './enqueue-checks.js';
import { startEnqueueSpans } from '../tracing.js';

export const DUE_CHANNEL = 'bundlefleet_due';

export interface EnqueueItem {
  payload: Record<string, unknown>;
  /**
   * Names one request: given again with the same payload (JSON equality, key order ignored), active
   * key and kind version, the bundle it enqueued is returned (created: false); with another of any
   * of them, the batch is refused with IdempotencyKeyReused.
   */
  idempotencyKey?: string;
  /** At most one bundle holds it at a time (see active-keys.ts); a taken key refuses the batch with ActiveKeyTaken. */
  activeKey?: string;
}

export interface EnqueueResult {
  vip_bundle_id: string;
  booking_id: string;
  /** false when the idempotency key was already used, with the same payload, and the existing ids are returned. */
  created: boolean;
}

export interface EnqueueOptions {
  kind?: string;
  /** The kind's version to enqueue under; default its latest. The bundle keeps it to the end. */
  kindVersion?: number;
  batchSize?: number;
  actor?: string;
  onProgress?: (done: number, total: number) => void;
  /** Where each item came from (`line 3` of an NDJSON file), for a refusal to name; default `item N` for an input of several. */
  itemNames?: Array<string | undefined>;
}

/**
 * The initialized event of each inserted bundle (`event`: a text parameter, the kind's event name),
 * as pg-boss jobs written by the same statement (events.ts eventJobsCte); `inserted` returns id,
 * booking_id and trace_context. An event carries its bundle's trace context, or `override` (a
 * text parameter) when one bundle's enqueue joined the caller's trace (tracing.ts startEnqueueSpans).
 */
const initializedEventCtes = (event: string, override: string): string =>
  `, ${eventJobsCte(`SELECT ${event}::text AS event_name, id AS correlation_id, jsonb_build_object('vip_bundle_id', id, 'booking_id', booking_id) AS data, coalesce(${override}::text, trace_context) AS traceparent FROM inserted`)}`;

/**
 * Rows that may meet used keys: `ON CONFLICT DO NOTHING`, and the answer joins each input row to
 * what was inserted or found. Parameters: $1 ids, $2 booking ids, $3 payloads (one JSON array),
 * $4 idempotency keys, $5 kind, $6 actor, $7 kind version, $8 active keys, $9 trace contexts, $10
 * the event's name and $11 its trace context override (only with events).
 */
const keyedBatchSql = memo((events: boolean) => `
WITH input AS (
  SELECT * FROM ROWS FROM (unnest($1::uuid[]), unnest($2::uuid[]), jsonb_array_elements($3::jsonb), unnest($4::text[]), unnest($8::text[]), unnest($9::text[]))
    WITH ORDINALITY AS t(id, booking_id, payload, idempotency_key, active_key, trace_context, ord)
), inserted AS (
  INSERT INTO bundles (id, booking_id, kind, kind_version, payload, idempotency_key, active_key, trace_context, enqueued_by)
  SELECT id, booking_id, $5, $7, payload, idempotency_key, active_key, trace_context, $6 FROM input ORDER BY ord
  -- No conflict target: a used idempotency key (a replay) and a held active key (a refusal) are
  -- both skipped here and told apart below.
  ON CONFLICT DO NOTHING
  RETURNING id, booking_id, idempotency_key, trace_context
)${events ? initializedEventCtes('$10', '$11') : ''}
SELECT input.ord,
       coalesce(ins.id, existing.id) AS id,
       coalesce(ins.booking_id, existing.booking_id) AS booking_id,
       ins.id IS NOT NULL AS created
FROM input
LEFT JOIN inserted ins ON ins.id = input.id
LEFT JOIN bundles existing ON input.idempotency_key IS NOT NULL AND existing.idempotency_key = input.idempotency_key AND ins.id IS NULL
ORDER BY input.ord`);

/**
 * A batch without idempotency keys cannot conflict, and its ids are made here: a plain INSERT
 * (no speculative insertion, no join back to find existing rows) that returns nothing per row,
 * with its events and its NOTIFY in the same statement: one autocommitted
 * statement, one round trip. About 1.4× the rate of keyedBatchSql for such batches.
 * Parameters: $1 ids, $2 booking ids, $3 payloads, $4 kind, $5 actor, $6 kind version, $7 trace
 * contexts, $8 the event's name and $9 its trace context override (only with events).
 */
const unkeyedBatchSql = memo((events: boolean) => `
WITH inserted AS (
  INSERT INTO bundles (id, booking_id, kind, kind_version, payload, trace_context, enqueued_by)
  SELECT id, booking_id, $4, $6, payload, trace_context, $5
  FROM ROWS FROM (unnest($1::uuid[]), unnest($2::uuid[]), jsonb_array_elements($3::jsonb), unnest($7::text[])) AS t(id, booking_id, payload, trace_context)
  RETURNING id, booking_id, trace_context
)${events ? initializedEventCtes('$8', '$9') : ''}
SELECT pg_notify('${DUE_CHANNEL}', count(*)::text) FROM inserted`);

/** The statement's name when it is named (db/statements.ts): one name per text. */
const statementName = (base: string, events: boolean): string => (events ? `${base}_events` : base);

/** Both texts of a statement, with and without its events, made once. */
function memo(make: (events: boolean) => string): (events: boolean) => string {
  const texts = [make(false), make(true)] as const;
  return (events) => texts[events ? 1 : 0];
}

type Row = { id: string | null; booking_id: string | null; created: boolean };

/**
 * The batch's columns as the statements take them: ids as uuid[] literals (a uuid needs no
 * quoting) and the payloads as one JSON array document, because pg's per-element array escaping
 * of 20,000 JSON texts (every quote escaped) was a tenth of a bulk enqueue's time (profiled in
 * bench/README.md, "Scenario 3").
 */
const uuidArray = (ids: string[]): string => `{${ids.join(',')}}`;
const jsonArray = (docs: string[]): string => `[${docs.join(',')}]`;

/** Rows whose key was taken by a transaction that committed after our snapshot: read them now. */
async function resolveLateDuplicates(client: pg.PoolClient, items: EnqueueItem[], rows: Row[]): Promise<void> {
  const missing = rows.map((r, i) => (r.id ? null : items[i]!.idempotencyKey)).filter((k): k is string => !!k);
  if (!missing.length) return;
  const { rows: found } = await client.query<{ id: string; booking_id: string; idempotency_key: string }>(
    'SELECT id, booking_id, idempotency_key FROM bundles WHERE idempotency_key = ANY($1::text[])',
    [missing],
  );
  const byKey = new Map(found.map((f) => [f.idempotency_key, f]));
  rows.forEach((r, i) => {
    if (r.id) return;
    const f = byKey.get(items[i]!.idempotencyKey!);
    if (f) Object.assign(r, { id: f.id, booking_id: f.booking_id, created: false });
  });
}

/**
 * A replayed idempotency key must come with the payload, active key, kind and kind version it was first enqueued with
 * (jsonb equality ignores key order): otherwise it is another request, refused (its transaction
 * rolls back) instead of answered with the first request's bundle. One query, only when the batch
 * has replays; the first such item in input order is named.
 */
const differentReplaySql = `
SELECT t.ord::int - 1 AS i, b.payload = t.payload AS same_payload, b.active_key IS NOT DISTINCT FROM t.active_key AS same_active_key, b.kind, b.kind_version
FROM ROWS FROM (unnest($1::uuid[]), jsonb_array_elements($2::jsonb), unnest($3::text[])) WITH ORDINALITY AS t(id, payload, active_key, ord)
JOIN bundles b ON b.id = t.id
WHERE NOT (b.payload = t.payload AND b.active_key IS NOT DISTINCT FROM t.active_key AND b.kind = $4 AND b.kind_version = $5)
ORDER BY t.ord
LIMIT 1`;

async function refuseDifferentReplays(client: pg.PoolClient, items: EnqueueItem[], rows: Row[], payloads: string[], kind: BundleKind, place: BatchPlace): Promise<void> {
  const replays = rows.flatMap((r, i) => (r.id && !r.created ? [i] : []));
  if (!replays.length) return;
  const { rows: found } = await client.query<{ i: number } & ReplayDifference>(differentReplaySql, [
    uuidArray(replays.map((i) => rows[i]!.id!)),
    jsonArray(replays.map((i) => payloads[i]!)),
    replays.map((i) => items[i]!.activeKey ?? null),
    kind.name,
    kind.version,
  ]);
  if (!found[0]) return;
  const i = replays[found[0].i]!;
  const index = place.start + i;
  throw new IdempotencyKeyReused(items[i]!.idempotencyKey!, index, itemName(index, place.total, place.names), undefined, describeDifference(found[0], kind));
}

interface ReplayDifference {
  same_payload: boolean;
  same_active_key: boolean;
  kind: string;
  kind_version: number;
}

/**
 * What the key's first request had that this one lacks, for the refusal to say: `a different
 * body` would send someone who changed only --kind-version looking for a change in the payload.
 */
function describeDifference(d: ReplayDifference, kind: BundleKind): string {
  const version =
    d.kind !== kind.name ? [`kind ${d.kind} v${d.kind_version} (this request: ${kind.name} v${kind.version})`]
    : d.kind_version !== kind.version ? [`kind version ${d.kind_version} (this request: ${kind.version})`]
    : [];
  return replayDifference(d.same_payload, d.same_active_key, version);
}

/**
 * Rows neither inserted nor replayed were refused by the active-key index: name each key's
 * holder and refuse the batch (its transaction rolls back). A key freed since the refusal has no
 * holder any more; those items are inserted again, a few times at most.
 */
async function refuseHeldKeys(client: pg.PoolClient, items: EnqueueItem[], rows: Row[], ids: string[], insertAgain: (indexes: number[]) => Promise<Row[]>): Promise<void> {
  for (let round = 0; ; round++) {
    const refused = rows.flatMap((r, i) => (r.id ? [] : [i]));
    if (!refused.length) return;
    const holders = await findKeyHolders(client, refused.map((i) => items[i]!.activeKey).filter((k): k is string => !!k));
    const own = new Set(ids);
    const taken = refused.flatMap((i) => {
      const h = holders.get(items[i]!.activeKey ?? '');
      return h ? [{ ...h, inThisInput: own.has(h.vip_bundle_id) }] : [];
    });
    if (taken.length) throw new ActiveKeyTaken(taken.filter((t, i) => taken.findIndex((u) => u.active_key === t.active_key) === i));
    if (round === 3) throw new Error(`enqueue: ${refused.length} bundle(s) were neither inserted nor found; try again`);
    const again = await insertAgain(refused);
    refused.forEach((index, j) => Object.assign(rows[index]!, again[j]));
  }
}

/**
 * An input without keys is written two batches at a time, each on its own connection: while one
 * batch's statement runs on the server the next is prepared here and sent (bench/README.md,
 * "Scenario 3"). An input with keys goes one batch at a time, so a refused key (an active key held
 * by another bundle, ActiveKeyTaken; an idempotency key used before with another payload,
 * IdempotencyKeyReused) names exactly the batches committed before it (`enqueuedBefore`). Either
 * way a failed batch throws once every batch in flight has settled: the batches before it stay
 * enqueued (and, two in flight, possibly the one after it).
 */
const UNKEYED_BATCHES_IN_FLIGHT = 2;

export async function enqueueBundles(pool: pg.Pool, items: EnqueueItem[], opts: EnqueueOptions = {}): Promise<EnqueueResult[]> {
  const kind = bundleKind(opts.kind ?? 'vip', opts.kindVersion);
  refuseInconsistentInput(items, opts.itemNames);
  const batchSize = opts.batchSize ?? 1000;
  const inFlightMax = items.every(isUnkeyed) ? UNKEYED_BATCHES_IN_FLIGHT : 1;
  const results: EnqueueResult[] = [];
  const inFlight: { end: number; rows: Promise<Row[]> }[] = [];
  const settleOldest = async (): Promise<void> => {
    const { end, rows } = inFlight.shift()!;
    for (const r of await rows) results.push({ vip_bundle_id: r.id!, booking_id: r.booking_id!, created: r.created });
    opts.onProgress?.(end, items.length);
  };
  try {
    for (let start = 0; start < items.length; start += batchSize) {
      if (inFlight.length === inFlightMax) await settleOldest();
      const rows = writeBatch(pool, items.slice(start, start + batchSize), kind, opts.actor ?? 'enqueue', results, { start, total: items.length, names: opts.itemNames });
      rows.catch(() => {}); // settled in order by settleOldest (or below), never left unhandled
      inFlight.push({ end: Math.min(start + batchSize, items.length), rows });
    }
    while (inFlight.length) await settleOldest();
  } catch (err) {
    // No statement of this call is left running once it throws.
    await Promise.allSettled(inFlight.map((f) => f.rows));
    throw err;
  }
  return results;
}

const isUnkeyed = (item: EnqueueItem): boolean => item.idempotencyKey == null && item.activeKey == null;

/** Where a batch sits in the call's input: its first item's index, how many items the input has, and their names if given. */
interface BatchPlace {
  start: number;
  total: number;
  names?: Array<string | undefined>;
}

/** One batch, committed on its own. `before`: what earlier batches enqueued, for a refusal to name. */
async function writeBatch(pool: pg.Pool, batch: EnqueueItem[], kind: BundleKind, actor: string, before: EnqueueResult[], place: BatchPlace): Promise<Row[]> {
  const ids = batch.map(() => randomUUID());
  const bookingIds = batch.map(() => randomUUID());
  const payloads = batch.map((b) => JSON.stringify(b.payload));
  const event = kind.events.initialized;
  const events = event !== undefined;
  // One trace per bundle (tracing.ts); without tracing, no spans and a null parameter.
  const traces = startEnqueueSpans(ids, bookingIds, kind.name);
  const traceparents = traces.traceparents;
  const eventParams = events ? [event, traces.eventTraceparentOverride] : [];
  let rows: Row[];
  if (batch.every(isUnkeyed)) {
    // Rows, events and NOTIFY in one statement: atomic on its own, no transaction needed.
    // Named only on a pool proven to be a session (db/statements.ts): parsing and planning this
    // statement was 0.3 ms of a single enqueue's 2.2 ms on an idle server (bench/README.md, "Scenario 2").
    const params = [uuidArray(ids), uuidArray(bookingIds), jsonArray(payloads), kind.name, actor, kind.version, traceparents, ...eventParams];
    await pool.query(statement(pool, statementName('bundlefleet_enqueue_unkeyed', events), unkeyedBatchSql(events), params, batch.length));
    rows = ids.map((id, i) => ({ id, booking_id: bookingIds[i]!, created: true }));
  } else {
    rows = await withTransaction(pool, async (client) => {
      const insert = async (at: number[]) =>
        (
          await client.query<Row>(statement(client, statementName('bundlefleet_enqueue', events), keyedBatchSql(events), [
            uuidArray(at.map((i) => ids[i]!)),
            uuidArray(at.map((i) => bookingIds[i]!)),
            jsonArray(at.map((i) => payloads[i]!)),
            at.map((i) => batch[i]!.idempotencyKey ?? null),
            kind.name,
            actor,
            kind.version,
            at.map((i) => batch[i]!.activeKey ?? null),
            traceparents && at.map((i) => traceparents[i]),
            ...eventParams,
          ], at.length))
        ).rows;
      const rows = await insert(batch.map((_, i) => i));
      await resolveLateDuplicates(client, batch, rows);
      await refuseHeldKeys(client, batch, rows, ids, insert);
      await refuseDifferentReplays(client, batch, rows, payloads, kind, place);
      const created = rows.filter((r) => r.created).length;
      if (created) await client.query('SELECT pg_notify($1, $2)', [DUE_CHANNEL, String(created)]);
      return rows;
    }).catch((err: unknown) => {
      // Earlier batches are committed (keyed inputs go one batch at a time): the refusal says which bundles were enqueued before it.
      if (err instanceof ActiveKeyTaken || err instanceof IdempotencyKeyReused) err.enqueuedBefore = [...before];
      throw err;
    });
  }
  // (A failed write throws past this: its spans are never ended, so never exported; the caller's span records the error.)
  traces.end();
  return rows;
}
