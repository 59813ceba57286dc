/**
 * The call horizon (sql/009_call_horizon.sql): `bundles.calls_until` is the latest lease any
 * attempt of the bundle was given, and no provider call of any attempt is in flight after it. An
 * undone bundle's reconciliation pass is due no earlier than this margin after it: the agent's
 * deadline runs on its own monotonic clock from before the claim was sent, the lease on
 * PostgreSQL's from when the claim ran, and the margin absorbs a rate difference between the two.
 */
export const CALL_HORIZON_MARGIN = `interval '5 seconds'`;
