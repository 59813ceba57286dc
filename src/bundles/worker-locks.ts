/**
 * The SQL that names a worker's liveness lock, shared by the scheduler (which takes it and claims
 * only while it holds it) and the supervisor (which resets the bundles of workers whose lock is
 * gone). A session advisory lock on one bigint key shows in pg_locks as classid (high 32 bits) and
 * objid (low 32 bits) with objsubid 1.
 */

/** The advisory-lock key of worker id `$n`. */
export const workerLockKey = (idParam: string) => `hashtextextended('bundlefleet.worker.' || ${idParam}, 0)`;

/** The bigint key of a pg_locks row `l` holding a session advisory lock on one bigint. */
export const lockRowKey = (l: string) => `((${l}.classid::bigint << 32) | ${l}.objid::bigint)`;

/**
 * Liveness locks granted in this database (rows of pg_locks as `l`): exclusive session advisory
 * locks only, so a claim's shared probe (workerLockHeldElsewhere) never counts as a live worker.
 */
export const grantedAdvisoryLocks = (l: string) => `
  pg_locks ${l}
  WHERE ${l}.locktype = 'advisory' AND ${l}.granted AND ${l}.objsubid = 1 AND ${l}.mode = 'ExclusiveLock'
    AND ${l}.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

/** True while some session holds the liveness lock of worker id `idParam`. */
export const workerLockHeld = (idParam: string) =>
  `EXISTS (SELECT 1 FROM ${grantedAdvisoryLocks('wl')} AND ${lockRowKey('wl')} = ${workerLockKey(idParam)})`;

/**
 * True while another session holds the liveness lock of worker id `idParam`, for the claim: a
 * shared try-lock fails exactly when some session holds the key exclusively. One lock-manager
 * probe instead of a pg_locks scan, which copies the whole lock table and every backend's
 * fast-path slots (measured, bench/experiments/claim-lock-check.ts: claim limit 1 p50 0.94 →
 * 0.75 ms with max_connections 400). When nobody holds it, the probe keeps a shared lock until the
 * claim's transaction ends; grantedAdvisoryLocks counts exclusive locks only, so that instant
 * never makes a gone worker look alive to the supervisor. The lock must be held by a session other
 * than the claim's (a worker's liveness connection is its own).
 */
export const workerLockHeldElsewhere = (idParam: string) => `(SELECT NOT pg_try_advisory_xact_lock_shared(${workerLockKey(idParam)}))`;
