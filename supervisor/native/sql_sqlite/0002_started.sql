-- start-all native queue on SQLite, schema version 2 (see sql/0002_started.sql).
ALTER TABLE start_all_jobs ADD COLUMN attempt_started INTEGER NOT NULL DEFAULT 0;
ALTER TABLE start_all_jobs ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0;
