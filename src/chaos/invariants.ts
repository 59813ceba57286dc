/**
 * The checks after a chaos run, from the provider simulator's ledger and the database only,
 * never from the fleet's logs: what the providers hold and what PostgreSQL holds is the truth.
 */
import type pg from 'pg';
import { bundleKind } from '../bundles/kinds.js';
import type { LedgerEntry } from '../providers/simulator.js';
import type { Violation } from './options.js';
import { CHAOS_KIND_VERSION } from './workload.js';

export const TERMINAL = ['completed', 'compensated', 'dead'];
/** The steps with an external effect (the same in both vip versions a run enqueues): one ledger key each. */
const STEP_NAMES = bundleKind('vip', CHAOS_KIND_VERSION).steps.filter((s) => s.provider).map((s) => s.name);
const UNDONE = ['compensated', 'dead'];

export interface CheckOptions {
  /** Whether a bundle may end `dead` in this run: only when providers could refuse cancels for good (see DEAD_ALLOWED_FROM_FAIL_RATE). */
  deadAllowed: boolean;
}

function violation(invariant: string, message: string, ids: string[]): Violation {
  const unique = [...new Set(ids)];
  return { invariant, message, count: unique.length, bundle_ids: unique.slice(0, 50) };
}

export async function checkInvariants(pool: pg.Pool, ledger: LedgerEntry[], ids: string[], opts: CheckOptions = { deadAllowed: false }): Promise<Violation[]> {
  const violations: Violation[] = [];
  const add = (invariant: string, message: string, bad: string[]) => bad.length && violations.push(violation(invariant, message, bad));
  const { rows: bundles } = await pool.query<{ id: string; state: string }>('SELECT id, state FROM bundles WHERE id = ANY($1::uuid[])', [ids]);
  const stateOf = new Map(bundles.map((b) => [b.id, b.state]));

  add('no bundle lost', 'enqueued bundles missing from the database', ids.filter((id) => !stateOf.has(id)));
  const unfinished = bundles.filter((b) => !TERMINAL.includes(b.state));
  add('every bundle terminal', `bundles not terminal (${[...new Set(unfinished.map((b) => b.state))].join(', ')})`, unfinished.map((b) => b.id));

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
  add('one key per (bundle, step)', 'ledger entries whose key is not <bundle_id>:<step> of a bundle of this run', stray);

  // No step booked twice: one entry holding a reference per key (a second would mean a second effect).
  add('no step booked twice', 'a (bundle, step) key holds two references in the ledger',
    [...byKey.entries()].filter(([, es]) => es.filter((e) => e.reference).length > 1).map(([k]) => k.split(':')[0]!));

  // The reference the database recorded must be the one the provider holds for that key (steps
  // with an external effect: a wait step's row records the signals it got, not a booking).
  const { rows: steps } = await pool.query<{ bundle_id: string; idempotency_key: string; reference: string | null }>(
    `SELECT bundle_id, idempotency_key, reference FROM steps WHERE bundle_id = ANY($1::uuid[]) AND reference IS NOT NULL AND name = ANY($2::text[])`,
    [ids, STEP_NAMES],
  );
  add('no step booked twice', 'a step row records a reference the provider does not hold for its key',
    steps.filter((s) => byKey.get(s.idempotency_key)?.find((e) => e.reference)?.reference !== s.reference).map((s) => s.bundle_id));

  // A provider's "come back later" (429 with Retry-After) parks the bundle; it is never a failed attempt.
  const { rows: failed429 } = await pool.query<{ bundle_id: string }>(
    `SELECT DISTINCT bundle_id FROM bundle_history WHERE bundle_id = ANY($1::uuid[]) AND to_state = 'failed' AND error LIKE '%provider answered 429%'`,
    [ids],
  );
  add('no 429 counted as a failure', 'a 429 with Retry-After was recorded as a failed attempt', failed429.map((r) => r.bundle_id));

  const { rows: tickets } = await pool.query<{ bundle_id: string; reference: string }>('SELECT bundle_id, reference FROM tickets WHERE bundle_id = ANY($1::uuid[])', [ids]);
  add('no step booked twice', 'the local tickets record differs from the provider reference',
    tickets.filter((t) => byKey.get(`${t.bundle_id}:show_tickets`)?.find((e) => e.reference)?.reference !== t.reference).map((t) => t.bundle_id));
  const withTickets = new Set(tickets.map((t) => t.bundle_id));
  add('tickets recorded locally', 'a completed bundle has no local tickets record', [...stateOf].filter(([id, state]) => state === 'completed' && !withTickets.has(id)).map(([id]) => id));
  // Invariant 8, local half: an undone bundle keeps no tickets row (a stale agent must not write one after the undo).
  add('no local record after compensation', 'a compensated or dead bundle has a local tickets row', tickets.filter((t) => UNDONE.includes(stateOf.get(t.bundle_id) ?? '')).map((t) => t.bundle_id));

  const completedWrong: string[] = [];
  const undoneLive: string[] = [];
  for (const [id, state] of stateOf) {
    const entries = byBundle.get(id) ?? [];
    if (state === 'completed') {
      // Exactly its four keys, each booked (live) at the provider.
      const live = new Set(entries.filter((e) => e.status === 'booked').map((e) => e.idempotency_key));
      const expected = STEP_NAMES.map((s) => `${id}:${s}`);
      if (live.size !== expected.length || !expected.every((k) => live.has(k)) || entries.length !== expected.length) completedWrong.push(id);
    } else if (UNDONE.includes(state) && entries.some((e) => e.status === 'booked')) {
      undoneLive.push(id);
    }
  }
  add('completed = exactly four live bookings', 'a completed bundle does not hold exactly its four keys booked in the ledger', completedWrong);
  // Invariant 8, provider half.
  add('nothing live after compensation', 'a compensated or dead bundle still has a booking live (status booked) in the ledger', undoneLive);
  const { rows: unreconciled } = await pool.query<{ id: string }>(
    `SELECT id FROM bundles WHERE id = ANY($1::uuid[]) AND state IN ('compensated', 'dead') AND reconcile_at IS NOT NULL`,
    [ids],
  );
  add('undone bundles reconciled', 'a compensated or dead bundle still has its reconciliation pass due', unreconciled.map((r) => r.id));

  if (!opts.deadAllowed) {
    add('no dead bundle while providers were healthy', 'a bundle ended dead although no provider refused its cancels for good',
      [...stateOf].filter(([, state]) => state === 'dead').map(([id]) => id));
  }
  const { rows: deadWithoutAlert } = await pool.query<{ id: string }>(
    `SELECT b.id FROM bundles b WHERE b.id = ANY($1::uuid[]) AND b.state = 'dead'
       AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.bundle_id = b.id AND a.kind = 'dead')`,
    [ids],
  );
  add('dead bundles alerted', 'a dead bundle has no dead alert', deadWithoutAlert.map((r) => r.id));
  return violations;
}
