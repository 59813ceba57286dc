-- Fleet-wide leases. The supervisor's "one pass at a time" was a session advisory lock, which a
-- frozen holder (SIGSTOP, a long GC, a paused VM) keeps forever because its kernel still answers
-- keep-alives, and which leaks onto idle server connections behind a transaction-mode pooler.
-- A lease row held until `expires_at` survives both: a holder that stops renewing loses it.
CREATE TABLE leases (
  name        text PRIMARY KEY,
  holder      text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL
);

-- Alert delivery is claimed per alert (next_delivery_at moves forward while a post is in flight,
-- then backs off after a failure), so deliveries run outside the supervisor's lease, several
-- supervisors never post the same alert at once, and a webhook that never answers costs one
-- bounded attempt per alert per backoff step.
ALTER TABLE alerts ADD COLUMN next_delivery_at timestamptz NOT NULL DEFAULT now();
DROP INDEX alerts_undelivered_idx;
CREATE INDEX alerts_undelivered_idx ON alerts (next_delivery_at) WHERE delivered_at IS NULL;

-- Reconciliation of undone bundles: once every call that could still be in flight for a
-- compensated or dead bundle has run out (lease + provider timeout × tries), a worker asks the
-- providers what they hold for its keys and cancels whatever is live. reconcile_at is when that
-- pass is due (NULL: none due); it moves forward while a worker runs it.
ALTER TABLE bundles ADD COLUMN reconcile_at timestamptz;
ALTER TABLE bundles ADD COLUMN reconcile_attempts integer NOT NULL DEFAULT 0;
CREATE INDEX bundles_reconcile_idx ON bundles (reconcile_at) WHERE reconcile_at IS NOT NULL;
