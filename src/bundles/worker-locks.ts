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

/** Advisory locks granted in this database (rows of pg_locks as `l`). */
export const grantedAdvisoryLocks = (l: string) => `
  pg_locks ${l}
  WHERE ${l}.locktype = 'advisory' AND ${l}.granted AND ${l}.objsubid = 1
    AND ${l}.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

/** True while some session holds the liveness lock of worker id `idParam`. */
export const workerLockHeld = (idParam: string) =>
  `EXISTS (SELECT 1 FROM ${grantedAdvisoryLocks('wl')} AND ${lockRowKey('wl')} = ${workerLockKey(idParam)})`;
