-- Traces (OpenTelemetry): one trace per bundle, across attempts, workers and days. The W3C
-- traceparent of the bundle's root span (the HTTP request or the enqueue that made it) is written
-- at enqueue and read at every claim, so each attempt, step, provider call, compensation,
-- reconciliation pass and supervisor decision joins that trace. NULL when tracing was off at enqueue.
ALTER TABLE bundles ADD COLUMN trace_context text;
