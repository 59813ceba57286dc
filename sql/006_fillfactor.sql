-- HOT updates (issue 12). Measured with bench/profile.ts (pg_stat_user_tables): of 12,000 step
-- updates in 3,000 VIP bundles only 2,246 were HOT, and none of 27,000 bundle updates. A step
-- update changes no indexed column, so it is HOT whenever its page has room: leave that room.
-- Bundles get some too, so a bundle's next version usually lands on its own page.
ALTER TABLE steps SET (fillfactor = 70);
ALTER TABLE bundles SET (fillfactor = 80);

-- The supervisor's scans of running and failed bundles need the state, not the lease: with
-- locked_until out of this index, a write that only extends a lease changes no indexed column
-- but updated_at (see bench/README.md: with that one too, step writes become HOT). Running and
-- failed bundles are few (at most the fleet's concurrency, plus failures awaiting a decision),
-- so the lease test is a filter on those rows.
DROP INDEX bundles_active_idx;
CREATE INDEX bundles_active_idx ON bundles (state) WHERE state IN ('running', 'failed');
