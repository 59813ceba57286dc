-- An undone bundle whose reconciliation pass has not reached every provider in
-- MAX_RECONCILE_FAILURES passes in a row raises an `unreconciled` alert (src/supervisor/alerts.ts),
-- and its passes go on, hourly, until one completes: a provider may still hold a booking that
-- nobody else will cancel (invariant 8), so the pass never stops on its own and never goes quiet.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN ('stuck', 'dead', 'resets', 'unreconciled'));

-- Passes that ended incomplete, counted by the pass itself when it ends (reconcile_attempts counts
-- claims: it is already one more while a pass runs, so an alert on it could fire before the pass
-- it counts has failed, and resolve when that pass then succeeds).
ALTER TABLE bundles ADD COLUMN reconcile_failures integer NOT NULL DEFAULT 0;

-- Before this migration a pass gave up after its tenth claim: reconcile_at NULL, nothing else.
-- Those bundles are due again now, one failure short of the alert (a pass that completed on its
-- tenth claim matches too; running it again is harmless, a pass only asks and cancels by key).
UPDATE bundles SET reconcile_at = now(), reconcile_failures = 9
WHERE state IN ('compensated', 'dead') AND reconcile_at IS NULL AND reconcile_attempts >= 10;
