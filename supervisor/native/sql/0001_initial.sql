-- start-all native queue, schema version 1.
-- One row per task id: the queue entry and its result live together, so a finish is one UPDATE.
CREATE SCHEMA IF NOT EXISTS start_all;

CREATE TABLE IF NOT EXISTS start_all.jobs (
    id            bigserial PRIMARY KEY,
    task_id       text        NOT NULL UNIQUE,
    name          text        NOT NULL,
    queue         text        NOT NULL DEFAULT 'default',
    priority      integer     NOT NULL DEFAULT 0,
    -- PENDING / RETRY = waiting in the queue, RESERVED = held by a worker under a lease,
    -- SUCCESS / FAILURE / REVOKED = finished
    status        text        NOT NULL DEFAULT 'PENDING',
    args          jsonb       NOT NULL DEFAULT '[]',
    kwargs        jsonb       NOT NULL DEFAULT '{}',
    options       jsonb,
    run_at        timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    retries       integer     NOT NULL DEFAULT 0,
    recoveries    integer     NOT NULL DEFAULT 0,
    ignore_result boolean     NOT NULL DEFAULT false,
    revoke        text,        -- NULL, 'revoke' or 'terminate'
    lease_token   uuid,
    lease_until   timestamptz,
    worker        text,
    result        jsonb,
    traceback     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);

-- The claim walks this index only: waiting rows, best priority first, oldest first.
CREATE INDEX IF NOT EXISTS jobs_waiting
    ON start_all.jobs (queue, priority DESC, run_at, id)
    WHERE status IN ('PENDING', 'RETRY');
-- The reaper looks for expired leases.
CREATE INDEX IF NOT EXISTS jobs_leased
    ON start_all.jobs (lease_until) WHERE status = 'RESERVED';
-- Retention prunes finished rows by age.
CREATE INDEX IF NOT EXISTS jobs_finished
    ON start_all.jobs (status, finished_at) WHERE status IN ('SUCCESS', 'FAILURE', 'REVOKED');

CREATE TABLE IF NOT EXISTS start_all.workers (
    id            text PRIMARY KEY,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    queues        text[]      NOT NULL,
    concurrency   integer     NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    running       integer     NOT NULL DEFAULT 0,
    processed     bigint      NOT NULL DEFAULT 0
);

-- One row per fired cron slot: the primary key is what makes a slot fire once across workers.
CREATE TABLE IF NOT EXISTS start_all.cron_slots (
    name      text        NOT NULL,
    slot      timestamptz NOT NULL,
    task_id   text        NOT NULL,
    fired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, slot)
);
