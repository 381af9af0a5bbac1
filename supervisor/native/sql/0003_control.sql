-- start-all native queue, schema version 3: what inspect() reads and rate_limit's buckets.
-- Each worker publishes its state (active, reserved, stats) as JSON with its heartbeat and
-- whenever an inspect request (a number from inspect_requests, sent by NOTIFY) asks for it;
-- `answered` is the latest request number its state is fresh for.
ALTER TABLE start_all.workers ADD COLUMN IF NOT EXISTS state jsonb;
ALTER TABLE start_all.workers ADD COLUMN IF NOT EXISTS answered bigint NOT NULL DEFAULT 0;
CREATE SEQUENCE IF NOT EXISTS start_all.inspect_requests;

-- One row per rate-limited task name, shared by every worker: the time its next run may
-- start (a GCRA "theoretical arrival time"), advanced in the same statement that claims.
CREATE TABLE IF NOT EXISTS start_all.rate_limits (
    name     text PRIMARY KEY,
    next_at  timestamptz NOT NULL DEFAULT now()
);
