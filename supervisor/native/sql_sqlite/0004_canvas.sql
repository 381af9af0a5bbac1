-- start-all native queue on SQLite, schema version 4: saved group results (chords and
-- other workflows need PostgreSQL).
CREATE TABLE IF NOT EXISTS start_all_groups (
    id         TEXT PRIMARY KEY,
    results    TEXT NOT NULL,
    created_at REAL NOT NULL
);
