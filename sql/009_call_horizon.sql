-- The call horizon: the latest lease any attempt of the bundle was ever given. An agent starts a
-- provider call only when the whole call (its timeout) ends before its lease deadline, which is
-- never later than the lease PostgreSQL holds, so no call of any attempt is in flight after this.
-- locked_until cannot tell it: resets, releases, cancels and finishes clear it, while an agent of
-- a superseded attempt (a cancelled bundle, an orphan whose process lives) may still be calling
-- until its own lease ends. An undone bundle's reconciliation pass runs after it (invariant 8),
-- whatever lease and timeout the worker that undid it, or the supervisor that gave up, used.
-- Never indexed: the step writes that extend it stay HOT.
ALTER TABLE bundles ADD COLUMN calls_until timestamptz;
