-- Flow control per provider kind (issue 13, part 1): fleet-wide limits live here, not in one
-- process's memory, so every worker process on every machine shares them.

-- One row per limited kind, written by workers from their --provider-concurrency/--provider-rate.
-- The rate is a GCRA (virtual scheduling) bucket: next_slot_at is the earliest time the next call
-- may start; a caller reserves n slots by moving it n intervals ahead in one UPDATE ... RETURNING.
CREATE TABLE provider_limits (
  kind            text PRIMARY KEY,
  max_in_flight   integer CHECK (max_in_flight > 0),
  rate_per_second double precision CHECK (rate_per_second > 0),
  next_slot_at    timestamptz NOT NULL DEFAULT now(),
  updated_by      text,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- In-flight slots of a kind with a concurrency limit: max_in_flight rows, each free (holder NULL)
-- or leased to a worker until expires_at, so a crashed worker cannot keep one.
CREATE TABLE provider_slots (
  kind       text NOT NULL,
  slot       integer NOT NULL,
  holder     text,
  expires_at timestamptz,
  PRIMARY KEY (kind, slot)
);

-- A provider kind paused fleet-wide until paused_until: it answered 429/503 with Retry-After, or
-- its circuit opened on a run of failures. Agents about to call it park their bundle instead.
CREATE TABLE provider_pauses (
  kind         text PRIMARY KEY,
  paused_until timestamptz NOT NULL,
  reason       text NOT NULL,
  paused_by    text,
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A bundle parked on a provider window: back to pending (or compensating) with next_run_at =
-- parked_until, no failure counted. parked_since is when its current run of parks began (the
-- supervisor's stuck alert waits --stuck-after-seconds from there).
ALTER TABLE bundles ADD COLUMN parked_until timestamptz;
ALTER TABLE bundles ADD COLUMN parked_reason text;
ALTER TABLE bundles ADD COLUMN parked_since timestamptz;
-- The provider kind whose window it waits for (stats count parked bundles per kind).
ALTER TABLE bundles ADD COLUMN parked_provider text;
