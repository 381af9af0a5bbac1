-- revoke_by_stamped_headers: stamp values whose tasks are revoked, now and when sent later.
-- A worker reads this table only for jobs that carry stamps (stamping.py).
CREATE TABLE IF NOT EXISTS start_all.revoked_stamps (
    stamp      text        NOT NULL,
    value      jsonb       NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stamp, value)
);
