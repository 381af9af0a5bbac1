"""rate_limit ("10/s", "100/m", "1000/h") honoured by all workers together, in the database.

Celery's limit is a token bucket in each worker process, so N workers run N times the rate.
Here each rate-limited task name has one row in start_all.rate_limits holding `next_at`, the
moment its next run may start (the "theoretical arrival time" of GCRA, a token bucket kept as
one timestamp). The claim statement of every worker takes the row FOR UPDATE, grants as many
jobs as the bucket allows, and moves `next_at` on by 1/rate per job, all in one statement: two
workers can never spend the same token.

The bucket holds BURST_SECONDS worth of tokens (at least one), so "10/s" starts one job every
100 ms, as Celery does, and "1000/s" up to 50 at a time, every 50 ms.

A worker claims rate-limited jobs only for its idle threads, so a granted job starts at once
(a token is not spent on a job that would wait behind others in the worker).

A worker whose registry has no rate-limited task claims with the unchanged plain statement:
plain tasks pay nothing. A worker with some excludes those names from its plain claim and
sends CLAIM_LIMITED in the same pipeline, so it is still one round trip.
"""

from __future__ import annotations

import re
from typing import Any

from supervisor.native.exceptions import ConfigError

BURST_SECONDS = 0.05
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(value: Any) -> float | None:
    """Jobs per second for Celery's rate strings ("10/s", "100/m", "1000/h", or a bare
    number meaning per second); None or 0 means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) or None
    match = _RATE.match(str(value))
    if not match:
        raise ConfigError(f"rate_limit {value!r}: expected a number per s, m or h, "
                          "like '10/s', '100/m' or '1000/h'")
    per = float(match.group(1)) / _UNITS[match.group(2) or "s"]
    return per or None


def limits_of(app: Any) -> dict[str, Any] | None:
    """The claim parameters for the app's rate-limited tasks, None when there are none:
    names, seconds between starts, and burst size."""
    names, every, burst = [], [], []
    for name, task in sorted(app.tasks.items()):
        rate = parse_rate(getattr(task, "rate_limit", None))
        if rate:
            names.append(name)
            every.append(1.0 / rate)
            burst.append(max(1, int(rate * BURST_SECONDS)))
    if not names:
        return None
    return {"limited": names, "every": every, "burst": burst}


def exclude_limited(claim_sql: str) -> str:
    """The plain claim statement, minus the rate-limited names."""
    anchor = "AND run_at <= now()"
    if anchor not in claim_sql:  # the claim statement changed shape: fail loudly, not open
        raise RuntimeError("rate limits: cannot find the claim's run_at condition")
    return claim_sql.replace(anchor, anchor + " AND NOT (name = ANY(%(limited)s))", 1)


CLAIM_LIMITED = """
WITH lim AS (
    SELECT * FROM unnest(%(limited)s::text[], %(every)s::float8[], %(burst)s::int[])
        AS l(name, every, burst)
), ensure AS (
    INSERT INTO start_all.rate_limits (name) SELECT name FROM lim ON CONFLICT DO NOTHING
), due AS (
    -- buckets with at least one token; a bucket another worker is claiming from is skipped
    SELECT r.name, l.every, floor((l.burst * l.every
               - greatest(extract(epoch FROM r.next_at - now()), 0)) / l.every + 1e-9)::int AS k
    FROM start_all.rate_limits AS r JOIN lim AS l USING (name)
    WHERE r.next_at < now() + make_interval(secs => (l.burst - 1) * l.every + 1e-6)
    FOR UPDATE OF r SKIP LOCKED
), picked AS (
    SELECT j.id, d.name FROM due AS d, LATERAL (
        SELECT id FROM start_all.jobs
        WHERE status IN ('PENDING', 'RETRY') AND queue = ANY(%(queues)s) AND run_at <= now()
          AND name = d.name
        ORDER BY priority DESC, run_at, id
        LIMIT least(d.k, %(limit)s, %(idle)s)
        FOR UPDATE SKIP LOCKED
    ) AS j
), spent AS (
    UPDATE start_all.rate_limits AS r
    SET next_at = greatest(r.next_at, now()) + make_interval(secs => c.n * d.every)
    FROM (SELECT name, count(*) AS n FROM picked GROUP BY name) AS c JOIN due AS d USING (name)
    WHERE r.name = c.name
)
UPDATE start_all.jobs AS j
SET status = 'RESERVED', lease_token = %(token)s, worker = %(worker)s, started_at = now(),
    lease_until = now() + make_interval(secs => %(lease)s)
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.task_id, j.name, j.queue, j.priority, j.args, j.kwargs, j.options, j.retries,
          j.ignore_result, j.revoke,
          extract(epoch FROM j.expires_at - now())::float8 AS expires_left,
          j.orphaned > 0 AS strict, extract(epoch FROM j.run_at)::float8 AS run_at
"""

# Seconds until a rate-limited job waiting in these queues could be claimed (None: none wait).
NEXT_LIMITED = """
SELECT extract(epoch FROM min(greatest(
           coalesce(r.next_at, now()) - make_interval(secs => (l.burst - 1) * l.every),
           w.run_at)) - now())::float8
FROM unnest(%(limited)s::text[], %(every)s::float8[], %(burst)s::int[]) AS l(name, every, burst)
JOIN LATERAL (
    SELECT min(run_at) AS run_at FROM start_all.jobs
    WHERE status IN ('PENDING', 'RETRY') AND queue = ANY(%(queues)s) AND name = l.name
) AS w ON w.run_at IS NOT NULL
LEFT JOIN start_all.rate_limits AS r ON r.name = l.name
"""
