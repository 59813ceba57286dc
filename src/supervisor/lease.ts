/**
 * A named fleet-wide lease in the `leases` table: held by one holder until it expires. It replaces
 * the supervisor's session advisory lock, which a frozen holder kept forever (River elects its
 * leader the same way). Exclusivity is for efficiency only: every supervisor decision is a
 * conditional UPDATE that is correct however many run (invariant 4); the lease keeps a resumed,
 * frozen holder from acting on a stale plan, because each decision statement checks it.
 */
import type { Queryable } from '../db/pool.js';

export const SUPERVISOR_LEASE = 'supervisor';

/** Takes or renews `name` for `holder` for `seconds`; false while someone else holds an unexpired lease. */
export async function acquireLease(db: Queryable, name: string, holder: string, seconds: number): Promise<boolean> {
  const { rows } = await db.query(
    `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
     ON CONFLICT (name) DO UPDATE SET
       holder = EXCLUDED.holder,
       expires_at = EXCLUDED.expires_at,
       acquired_at = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.acquired_at ELSE now() END
     WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now()
     RETURNING holder`,
    [name, holder, seconds],
  );
  return rows.length === 1;
}

/** Gives the lease up at once (the next pass, anywhere, may take it). */
export async function releaseLease(db: Queryable, name: string, holder: string): Promise<void> {
  await db.query(`UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2`, [name, holder]);
}

/** SQL that is true while `holderParam` holds the lease `nameParam` (for a decision's WHERE). */
export const leaseHeldSql = (nameParam: string, holderParam: string) =>
  `EXISTS (SELECT 1 FROM leases WHERE name = ${nameParam} AND holder = ${holderParam} AND expires_at > now())`;
