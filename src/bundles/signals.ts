/**
 * Signals: external confirmations a bundle may wait for (an airline's "ticketed"), arriving through
 * `POST /bundles/:id/signals/:name`, `bundlefleet signal`, or the pg-boss queue `bundlefleet.signals`.
 * Each is stored once per sender id (a repeat is a no-op), written to the timeline, and — when it
 * completes the set a `waiting` bundle waits for — moves the bundle back to `pending` and wakes the
 * claim with NOTIFY, all in one transaction that locks the bundle row first. The agent entering a
 * wait locks the same row (agents/fenced-writes.ts enterWait), so a signal is never missed: it
 * lands either before the agent looks, or after the bundle is already `waiting`.
 */
import type pg from 'pg';
import { z } from 'zod';
import { withTransaction } from '../db/pool.js';
import { BadInput, NotFound } from '../errors.js';
import { DUE_CHANNEL } from './enqueue.js';
import { bundleKind, signalNames, UnknownKindVersion } from './kinds.js';
import { describeIssues, parseBundleId, required } from './input.js';
import { recordSignal } from './tracing.js';

const signalSchema = z.strictObject({
  name: z.string(required('a string')).min(1, 'is required').max(100, 'must be at most 100 characters').regex(/^[a-z][a-z0-9_]*$/, 'must be lower_snake_case'),
  // A blank id would dedupe every blank delivery as one signal; say so instead of storing it.
  // An empty id stops at "must not be empty": it is one problem, not also a blank one.
  id: z.string(required('a string')).min(1, { error: 'must not be empty', abort: true }).max(200, 'must be at most 200 characters').refine((v) => v.trim() !== '', 'must not be blank (only spaces)').optional(),
  data: z.record(z.string(), z.unknown(), required('a JSON object')).optional(),
});

export interface SignalInput {
  bundleId: string;
  name: string;
  /** The sender's id for this signal: a second delivery with it is ignored. Default: the name (one per name). */
  id?: string;
  data?: Record<string, unknown>;
  actor?: string;
}

export interface SignalResult {
  vip_bundle_id: string;
  name: string;
  signal_id: string;
  /** false when this sender id was already received. */
  stored: boolean;
  /** true when this signal completed the wait and the bundle is pending again. */
  woke: boolean;
  state: string;
}

/**
 * Validates a signal (name, id, data) with messages naming the field; throws BadInput. `names`
 * renames the fields for where they came from: the CLI passes `{ id: '--signal-id', data: '--data' }`,
 * the HTTP body keeps `id` and `data`.
 */
export function parseSignal(raw: unknown, names: Record<string, string> = {}): { name: string; id?: string; data?: Record<string, unknown> } {
  const parsed = signalSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issues = describeIssues(parsed.error, undefined, names);
  throw new BadInput(issues.join('; '), issues);
}

export async function receiveSignal(pool: pg.Pool, input: SignalInput): Promise<SignalResult> {
  const id = parseBundleId(input.bundleId);
  const { name, id: senderId, data } = parseSignal({ name: input.name, id: input.id, data: input.data });
  const signalId = senderId ?? name;
  const startedAt = Date.now();
  let traceContext: string | null = null;
  // Checked before the row is locked (a bundle's kind and version never change): a refused signal
  // must not hold a due bundle's row, which a concurrent claim would skip (SKIP LOCKED) with no
  // NOTIFY to follow its rollback (test/wakes.test.ts).
  const { rows: [found] } = await pool.query<{ id: string; kind: string; kind_version: number }>('SELECT id, kind, kind_version FROM bundles WHERE id = $1 OR booking_id = $1', [id]);
  if (!found) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
  let expected: string[] = [];
  try {
    expected = signalNames(bundleKind(found.kind, found.kind_version));
  } catch (err) {
    if (!(err instanceof UnknownKindVersion)) throw err;
  }
  if (!expected.includes(name)) {
    throw new BadInput(`name: bundle ${found.id} (kind ${found.kind} v${found.kind_version}) waits for no signal ${JSON.stringify(name)}${expected.length ? `; it takes ${expected.join(', ')}` : '; it takes none'}`);
  }
  const result = await withTransaction(pool, async (client) => {
    const { rows } = await client.query<{ id: string; state: string; attempt: number; trace_context: string | null }>(
      'SELECT id, state, attempt, trace_context FROM bundles WHERE id = $1 FOR NO KEY UPDATE',
      [found.id],
    );
    const bundle = rows[0];
    if (!bundle) throw new NotFound(`no bundle with vip_bundle_id or booking_id ${id}`);
    traceContext = bundle.trace_context;
    const { rowCount } = await client.query(
      'INSERT INTO bundle_signals (bundle_id, signal_id, name, data) VALUES ($1, $2, $3, $4) ON CONFLICT (bundle_id, signal_id) DO NOTHING',
      [bundle.id, signalId, name, data ?? null],
    );
    const stored = rowCount === 1;
    if (stored) {
      await client.query(
        `INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $4, $5)`,
        [bundle.id, input.actor ?? 'signal', bundle.attempt, bundle.state, `signal ${name} received${senderId ? ` (id ${senderId})` : ''}`],
      );
    }
    // Complete: every signal it waits for is in (this one included, read in this statement).
    const { rows: woken } = await client.query<{ id: string }>(
      `WITH woken AS (
         UPDATE bundles b SET state = 'pending', waiting_for = NULL, wait_deadline = NULL, next_run_at = now(), updated_at = now()
         WHERE b.id = $1 AND b.state = 'waiting'
           AND NOT EXISTS (SELECT 1 FROM unnest(b.waiting_for) AS w(name) WHERE w.name NOT IN (SELECT s.name FROM bundle_signals s WHERE s.bundle_id = b.id))
         RETURNING b.id, b.attempt
       ), history AS (
         INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, reason)
         SELECT id, $2, attempt, 'waiting', 'pending', 'all signals received' FROM woken
       )
       SELECT id, pg_notify('${DUE_CHANNEL}', '') FROM woken`,
      [bundle.id, input.actor ?? 'signal'],
    );
    const woke = woken.length === 1;
    // A due bundle (pending or compensating) that a claim skipped while this transaction held its
    // row (FOR UPDATE SKIP LOCKED) is announced again, or it waits for a worker's next poll.
    if (!woke && (bundle.state === 'pending' || bundle.state === 'compensating')) await client.query(`SELECT pg_notify('${DUE_CHANNEL}', '')`);
    return { vip_bundle_id: bundle.id, name, signal_id: signalId, stored, woke, state: woke ? 'pending' : bundle.state };
  });
  // Committed: a span in the bundle's trace, linked to the request or command that delivered it.
  recordSignal(result, traceContext, startedAt);
  return result;
}
