-- The bundle is the unit of work. `state` is the state machine drawn in README.md; `phase` says
-- whether a running bundle is booking its steps or undoing them (compensating → running (undo)).
CREATE TABLE bundles (
  id                 uuid PRIMARY KEY,
  booking_id         uuid NOT NULL UNIQUE,
  kind               text NOT NULL,
  state              text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'failed', 'compensating', 'completed', 'compensated', 'dead')),
  phase              text NOT NULL DEFAULT 'book' CHECK (phase IN ('book', 'undo')),
  payload            jsonb NOT NULL,
  idempotency_key    text,
  attempt            integer NOT NULL DEFAULT 0,
  failure_count      integer NOT NULL DEFAULT 0,
  undo_failure_count integer NOT NULL DEFAULT 0,
  reset_count        integer NOT NULL DEFAULT 0,
  locked_by          text,
  locked_until       timestamptz,
  next_run_at        timestamptz NOT NULL DEFAULT now(),
  last_error         text,
  last_error_class   text CHECK (last_error_class IN ('transient', 'permanent')),
  last_error_step    text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  finished_at        timestamptz
);

-- Enqueue at most once per key. Partial: most bundles have no key, and a NULL entry would cost
-- every enqueue an index insert for nothing.
CREATE UNIQUE INDEX bundles_idempotency_key_idx ON bundles (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Serves the claim. The scheduler's WHERE repeats this condition literally so the planner uses it.
CREATE INDEX bundles_claim_idx ON bundles (next_run_at) WHERE state IN ('pending', 'compensating');
-- Serves the supervisor's scans of leased and failed bundles.
CREATE INDEX bundles_active_idx ON bundles (state, locked_until) WHERE state IN ('running', 'failed');
CREATE INDEX bundles_updated_idx ON bundles (updated_at DESC);
-- Serves the supervisor's stuck-bundle alert scan over non-terminal bundles only.
CREATE INDEX bundles_unfinished_idx ON bundles (created_at) WHERE state IN ('pending', 'running', 'failed', 'compensating');
CREATE INDEX bundles_finished_idx ON bundles (finished_at) WHERE finished_at IS NOT NULL;

-- One row per step that an agent has started: the recovery point. The idempotency key is made
-- once, when the intent is first recorded, and never changes (invariant 1).
CREATE TABLE steps (
  bundle_id       uuid NOT NULL REFERENCES bundles (id) ON DELETE CASCADE,
  position        smallint NOT NULL,
  name            text NOT NULL,
  status          text NOT NULL CHECK (status IN ('booking', 'booked', 'failed', 'cancelled')),
  idempotency_key text NOT NULL UNIQUE,
  reference       text,
  error           text,
  attempt         integer NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (bundle_id, position)
);

-- Append-only timeline: one row per transition of a bundle or of one of its steps.
CREATE TABLE bundle_history (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  bundle_id  uuid NOT NULL,
  at         timestamptz NOT NULL DEFAULT now(),
  actor      text NOT NULL,
  attempt    integer NOT NULL,
  from_state text,
  to_state   text NOT NULL,
  step       text,
  reason     text NOT NULL,
  error      text
);
CREATE INDEX bundle_history_bundle_idx ON bundle_history (bundle_id, id);

-- Show tickets are also recorded locally; the unique booking id makes a repeat a no-op.
CREATE TABLE tickets (
  booking_id        uuid PRIMARY KEY,
  bundle_id         uuid NOT NULL,
  show_id           text NOT NULL,
  number_of_tickets integer NOT NULL,
  reference         text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- Stuck-process alerts: at most one unresolved alert per (bundle, kind).
CREATE TABLE alerts (
  id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  bundle_id          uuid NOT NULL,
  kind               text NOT NULL CHECK (kind IN ('stuck', 'dead', 'resets')),
  message            text NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  acked_at           timestamptz,
  resolved_at        timestamptz,
  delivered_at       timestamptz,
  delivery_attempts  integer NOT NULL DEFAULT 0,
  last_delivery_error text
);
CREATE UNIQUE INDEX alerts_one_unresolved_idx ON alerts (bundle_id, kind) WHERE resolved_at IS NULL;
CREATE INDEX alerts_undelivered_idx ON alerts (id) WHERE delivered_at IS NULL;
