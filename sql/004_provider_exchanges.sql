-- Every provider exchange an agent makes (seed 001's before/after hooks): an append-only log kept
-- for `inspect` and the bundle page, written in batches beside the agent's work (never in its
-- transactions) and pruned with the bundle's history by the supervisor's retention. Bodies are
-- redacted (no customer email, no passenger name) and bounded before they get here. No foreign
-- key: a stale agent's exchange is recorded even if its bundle is gone (it happened).
CREATE TABLE provider_exchanges (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  bundle_id     uuid NOT NULL,
  attempt       integer,
  worker_id     text,
  step          text,
  provider      text NOT NULL,
  operation     text NOT NULL CHECK (operation IN ('book', 'cancel', 'lookup')),
  method        text NOT NULL,
  path          text NOT NULL,
  -- NULL when no reply came (timeout, reset, abort).
  status        integer,
  outcome       text NOT NULL CHECK (outcome IN ('ok', 'transient', 'permanent')),
  error         text,
  duration_ms   integer NOT NULL,
  request_body  text,
  response_body text,
  at            timestamptz NOT NULL
);
CREATE INDEX provider_exchanges_bundle_idx ON provider_exchanges (bundle_id, id);
-- Serves retention's "older than" pruning: rows arrive roughly in time order, so a BRIN index
-- finds the old ones (or that there are none) at almost no cost per insert.
CREATE INDEX provider_exchanges_at_idx ON provider_exchanges USING brin (at);
