-- start-all native queue on SQLite (development), schema version 1. Times are epoch seconds.
CREATE TABLE IF NOT EXISTS start_all_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    queue         TEXT    NOT NULL DEFAULT 'celery',
    priority      INTEGER NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'PENDING',
    args          TEXT    NOT NULL DEFAULT '[]',
    kwargs        TEXT    NOT NULL DEFAULT '{}',
    options       TEXT,
    run_at        REAL    NOT NULL,
    expires_at    REAL,
    retries       INTEGER NOT NULL DEFAULT 0,
    recoveries    INTEGER NOT NULL DEFAULT 0,
    ignore_result INTEGER NOT NULL DEFAULT 0,
    revoke        TEXT,
    lease_token   TEXT,
    lease_until   REAL,
    worker        TEXT,
    result        TEXT,
    traceback     TEXT,
    created_at    REAL    NOT NULL,
    started_at    REAL,
    finished_at   REAL
);
CREATE INDEX IF NOT EXISTS start_all_jobs_waiting
    ON start_all_jobs (queue, priority DESC, run_at, id) WHERE status IN ('PENDING', 'RETRY');
CREATE INDEX IF NOT EXISTS start_all_jobs_leased
    ON start_all_jobs (lease_until) WHERE status = 'RESERVED';
CREATE INDEX IF NOT EXISTS start_all_jobs_finished ON start_all_jobs (status, finished_at);

CREATE TABLE IF NOT EXISTS start_all_workers (
    id          TEXT PRIMARY KEY,
    hostname    TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT    NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    running     INTEGER NOT NULL DEFAULT 0,
    processed   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS start_all_cron_slots (
    name     TEXT NOT NULL,
    slot     REAL NOT NULL,
    task_id  TEXT NOT NULL,
    fired_at REAL NOT NULL,
    PRIMARY KEY (name, slot)
);
