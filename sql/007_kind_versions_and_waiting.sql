-- A kind has a version; a bundle finishes or is undone under the version it was enqueued with
-- (its step list), whatever version the workers that run it now consider the latest. Existing
-- bundles are version 1.
ALTER TABLE bundles ADD COLUMN kind_version integer NOT NULL DEFAULT 1;

-- Waiting for external confirmations: a `waiting` bundle holds no worker and no connection until
-- every signal in `waiting_for` has arrived (in any order, deduplicated by the sender's id) or its
-- `wait_deadline` passes, when the supervisor compensates it.
ALTER TABLE bundles DROP CONSTRAINT bundles_state_check;
ALTER TABLE bundles ADD CONSTRAINT bundles_state_check
  CHECK (state IN ('pending', 'running', 'waiting', 'failed', 'compensating', 'completed', 'compensated', 'dead'));
ALTER TABLE bundles ADD COLUMN waiting_for text[];
ALTER TABLE bundles ADD COLUMN wait_deadline timestamptz;
-- Serves the supervisor's scan for waits past their deadline.
CREATE INDEX bundles_waiting_idx ON bundles (wait_deadline) WHERE state = 'waiting';

-- Signals (external confirmations) received for a bundle, once per sender id: a repeat is a no-op.
-- They may arrive before the bundle reaches its wait.
CREATE TABLE bundle_signals (
  bundle_id   uuid NOT NULL REFERENCES bundles (id) ON DELETE CASCADE,
  signal_id   text NOT NULL,
  name        text NOT NULL,
  data        jsonb,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (bundle_id, signal_id)
);
