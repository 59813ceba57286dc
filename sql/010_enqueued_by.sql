-- A bundle's enqueue is its first timeline entry, kept in its own row instead of a history row
-- (issue 12): `created_at` is when, `enqueued_by` who (the actor the history row carried); the
-- timeline (src/bundles/read.ts) shows it first, as it showed the history row. A history row per
-- enqueued bundle was a fifth of a bulk enqueue's work: a second tuple, two more index entries and
-- a third of the WAL (bench/README.md, "Scenario 3: the enqueue's history row"). Bundles enqueued
-- before this migration keep their history row and have no `enqueued_by`, so none shows twice.
-- Nullable without a default: adding it rewrites nothing.
ALTER TABLE bundles ADD COLUMN enqueued_by text;
