-- Schema version 3 (see sql/0003_control.sql): published worker state and rate-limit rows.
ALTER TABLE start_all_workers ADD COLUMN state TEXT;
ALTER TABLE start_all_workers ADD COLUMN answered INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS start_all_rate_limits (
    name     TEXT PRIMARY KEY,
    next_at  REAL NOT NULL DEFAULT 0
);
