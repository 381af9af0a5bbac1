-- start-all native queue, schema version 2: recoveries count only executions that started.
-- attempt_started: an execution of the current claim durably began (set before the task runs,
--   for jobs that run one by one, see `orphaned`) and has not finished.
-- orphaned: times the job was held by a worker that died without a durable start mark (it may
--   have been only fetched): never counted as a recovery, but such a job next runs one by one
--   with a start mark first, so a task that kills its worker is still caught.
ALTER TABLE start_all.jobs ADD COLUMN IF NOT EXISTS attempt_started boolean NOT NULL DEFAULT false;
ALTER TABLE start_all.jobs ADD COLUMN IF NOT EXISTS orphaned integer NOT NULL DEFAULT 0;
