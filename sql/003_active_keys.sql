-- At most one active process per business key (README, "Active keys"). A bundle holds its
-- active key while it is not finished, and also after it failed (compensated or dead) until an
-- operator acknowledges the failure (`bundlefleet ack`); a completed bundle frees its key.
-- The unique index is the whole rule: an enqueue that would make a second holder fails on it,
-- whatever ran concurrently, and a transition into `completed` releases the key by itself.
ALTER TABLE bundles
  ADD COLUMN active_key text CHECK (char_length(active_key) BETWEEN 1 AND 200),
  ADD COLUMN failure_acked_at timestamptz;

-- Queries that look up a key's holder repeat this condition literally so the planner uses it.
CREATE UNIQUE INDEX bundles_active_key_idx ON bundles (active_key)
  WHERE active_key IS NOT NULL
    AND (state NOT IN ('completed', 'compensated', 'dead') OR (state IN ('compensated', 'dead') AND failure_acked_at IS NULL));
