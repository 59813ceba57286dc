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

export interface StepWrite {
  fence: Fence;
  position: number;
  name: string;
  key: string;
  /** 'booking' records the intent before a provider call; 'booked' records its outcome. */
  status: 'booking' | 'booked';
  reference: string | null;
}

// One statement for any number of step writes (of different bundles): each row fenced on its own
// bundle, extending its own lease, upserting its step and appending its history row.
const stepWritesSql = `
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::float8[], $5::smallint[], $6::text[], $7::text[], $8::text[], $9::text[])
    AS t(id, attempt, actor, lease, position, name, status, key, reference)
), fence AS (
  UPDATE bundles b SET locked_until = now() + make_interval(secs => i.lease), updated_at = now()
  FROM input i
  WHERE b.id = i.id AND b.attempt = i.attempt AND b.state = 'running'
  RETURNING b.id
), ok AS (
  SELECT i.* FROM input i JOIN fence f ON f.id = i.id
), step AS (
  INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, attempt)
  SELECT id, position, name, status, key, reference, attempt FROM ok
  ON CONFLICT (bundle_id, position) DO UPDATE SET
    status = EXCLUDED.status,
    attempt = CASE WHEN EXCLUDED.status = 'booking' THEN EXCLUDED.attempt ELSE steps.attempt END,
    reference = CASE WHEN EXCLUDED.status = 'booked' THEN EXCLUDED.reference ELSE steps.reference END,
    error = CASE WHEN EXCLUDED.status = 'booked' THEN NULL ELSE steps.error END,
    updated_at = now()
  RETURNING bundle_id, idempotency_key
), history AS (
  INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason)
  SELECT id, actor, attempt, 'running', 'running', name, CASE status WHEN 'booking' THEN 'booking' ELSE 'booked ' || reference END FROM ok
)
SELECT ok.id, step.idempotency_key FROM ok JOIN step ON step.bundle_id = ok.id`;

/**
 * Writes step intents and outcomes, one per bundle. Returns, for each bundle whose write went
 * through, the step's stored (stable) idempotency key; a bundle missing from the map was fenced out.
 */
export async function writeSteps(db: Queryable, writes: StepWrite[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ id: string; idempotency_key: string }>(stepWritesSql, [
    writes.map((w) => w.fence.bundleId),
    writes.map((w) => w.fence.attempt),
    writes.map((w) => w.fence.actor),
    writes.map((w) => w.fence.leaseSeconds),
    writes.map((w) => w.position),
    writes.map((w) => w.name),
    writes.map((w) => w.status),
    writes.map((w) => w.key),
    writes.map((w) => w.reference),
  ]);
  return new Map(rows.map((r) => [r.id, r.idempotency_key]));
}

/** Records the intent to call a provider (step → booking) and returns the step's stable key, or null when fenced out. */
export async function recordIntent(db: Queryable, f: Fence, position: number, name: string, key: string): Promise<string | null> {
  const written = await writeSteps(db, [{ fence: f, position, name, key, status: 'booking', reference: null }]);
  return written.get(f.bundleId) ?? null;
}

/** Records a booked step (the new recovery point). Returns false when fenced out. */
export async function recordBooked(db: Queryable, f: Fence, position: number, name: string, key: string, reference: string): Promise<boolean> {
  const written = await writeSteps(db, [{ fence: f, position, name, key, status: 'booked', reference }]);
  return written.has(f.bundleId);
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
