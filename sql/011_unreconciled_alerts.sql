-- An undone bundle whose reconciliation pass has not reached every provider after
-- MAX_RECONCILE_ATTEMPTS passes raises an `unreconciled` alert (src/supervisor/alerts.ts), and its
-- passes go on, hourly, until one completes: a provider may still hold a booking that nobody
-- else will cancel (invariant 8), so the pass never stops on its own and never goes quiet.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN ('stuck', 'dead', 'resets', 'unreconciled'));
