/**
 * Every write an agent makes, each one statement fenced on (bundle id, attempt, state 'running'):
 * zero rows means a newer attempt owns the bundle (the supervisor reset it, or it was released),
 * and the agent must stop. Each write also extends the lease, so an agent that makes progress
 * keeps its bundle, and appends the transition to the history.
 */
import type { Queryable } from '../db/pool.js';

export interface Fence {
  bundleId: string;
  attempt: number;
  actor: string;
  leaseSeconds: number;
}

export interface StepRow {
  position: number;
  name: string;
  status: 'booking' | 'booked' | 'failed' | 'cancelled';
  idempotency_key: string;
  reference: string | null;
}

const fenceCte = `fence AS (
  UPDATE bundles SET locked_until = now() + make_interval(secs => $3), updated_at = now()
  WHERE id = $1 AND attempt = $2 AND state = 'running'
  RETURNING id
)`;

/** Records the intent to call a provider (step → booking) and returns the step's stable key, or null when fenced out. */
export async function recordIntent(db: Queryable, f: Fence, position: number, name: string, key: string): Promise<string | null> {
  const { rows } = await db.query<{ idempotency_key: string }>(
    `WITH ${fenceCte}, step AS (
       INSERT INTO steps (bundle_id, position, name, status, idempotency_key, attempt)
       SELECT id, $5, $6, 'booking', $7, $2 FROM fence
       ON CONFLICT (bundle_id, position) DO UPDATE SET status = 'booking', attempt = EXCLUDED.attempt, updated_at = now()
       RETURNING idempotency_key
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
       SELECT id, $4, $2, 'running', 'running', $6, 'booking' FROM fence
     )
     SELECT idempotency_key FROM step`,
    [f.bundleId, f.attempt, f.leaseSeconds, f.actor, position, name, key],
  );
  return rows[0]?.idempotency_key ?? null;
}

/** Records a booked step (the new recovery point). Returns false when fenced out. */
export async function recordBooked(db: Queryable, f: Fence, position: number, name: string, key: string, reference: string): Promise<boolean> {
  const { rows } = await db.query(
    `WITH ${fenceCte}, step AS (
       INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, attempt)
       SELECT id, $5, $6, 'booked', $7, $8, $2 FROM fence
       ON CONFLICT (bundle_id, position) DO UPDATE SET status = 'booked', reference = EXCLUDED.reference, error = NULL, updated_at = now()
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
       SELECT id, $4, $2, 'running', 'running', $6, 'booked ' || $8 FROM fence
     )
     SELECT id FROM fence`,
    [f.bundleId, f.attempt, f.leaseSeconds, f.actor, position, name, key, reference],
  );
  return rows.length === 1;
}

/** Records an undone step. Returns false when fenced out. */
export async function recordCancelled(db: Queryable, f: Fence, position: number, name: string): Promise<boolean> {
  const { rows } = await db.query(
    `WITH ${fenceCte}, step AS (
       UPDATE steps SET status = 'cancelled', updated_at = now() FROM fence WHERE steps.bundle_id = fence.id AND steps.position = $5
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
       SELECT id, $4, $2, 'running', 'running', $6, 'cancelled' FROM fence
     )
     SELECT id FROM fence`,
    [f.bundleId, f.attempt, f.leaseSeconds, f.actor, position, name],
  );
  return rows.length === 1;
}

export interface FailureRecord {
  step: string;
  position: number;
  errorClass: 'transient' | 'permanent';
  message: string;
}

/**
 * The attempt failed: state `failed` with the error's class and step; the supervisor decides
 * what happens next. A definitive no while booking also marks the step `failed`.
 */
export async function recordFailure(db: Queryable, f: Fence, failure: FailureRecord): Promise<boolean> {
  const { rows } = await db.query(
    `WITH fence AS (
       UPDATE bundles SET state = 'failed', locked_by = NULL, locked_until = NULL, updated_at = now(),
         last_error = $4, last_error_class = $5, last_error_step = $6
       WHERE id = $1 AND attempt = $2 AND state = 'running'
       RETURNING id, phase
     ), step AS (
       UPDATE steps SET status = 'failed', error = $4, updated_at = now()
       FROM fence WHERE steps.bundle_id = fence.id AND steps.position = $7 AND $5 = 'permanent' AND fence.phase = 'book'
     ), history AS (
       INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason, error)
       SELECT id, $3, $2, 'running', 'failed', $6,
              CASE WHEN phase = 'undo' THEN 'undo failed' ELSE 'attempt failed' END || ' (' || $5 || ')', $4 FROM fence
     )
     SELECT id FROM fence`,
    [f.bundleId, f.attempt, f.actor, failure.message.slice(0, 2000), failure.errorClass, failure.step, failure.position],
  );
  return rows.length === 1;
}

export async function loadSteps(db: Queryable, bundleId: string): Promise<StepRow[]> {
  const { rows } = await db.query<StepRow>(
    'SELECT position, name, status, idempotency_key, reference FROM steps WHERE bundle_id = $1 ORDER BY position',
    [bundleId],
  );
  return rows;
}
