"""start_all_settings(globals()): the app's own settings kept, only what it must change
changed, each change recorded (what `check` and `--dry-run` print)."""

from __future__ import annotations

import pytest

from supervisor.contrib.django_settings import HEALTH_MIDDLEWARE, start_all_settings

APP_Q = {"name": "mailer", "orm": "default", "timeout": 600, "max_attempts": 1,
         "workers": 4, "error_reporter": {"sentry": {"dsn": "https://k@sentry.example/1"}}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "START_ALL_WORKER_CONCURRENCY", "START_ALL_WORKER_MAX_RSS_MB",
                 "DATA_DIR", "CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


def test_the_apps_q_cluster_is_kept_and_only_sized(monkeypatch):
    monkeypatch.setenv("START_ALL_WORKER_CONCURRENCY", "2")
    monkeypatch.setenv("START_ALL_WORKER_MAX_RSS_MB", "140")
    ns = {"INSTALLED_APPS": ["django_q"], "Q_CLUSTER": dict(APP_Q)}
    changes = start_all_settings(ns)
    q = ns["Q_CLUSTER"]
    for key in ("name", "orm", "timeout", "max_attempts", "error_reporter"):
        assert q[key] == APP_Q[key]
    assert (q["workers"], q["queue_limit"], q["max_rss"]) == (2, 4, 140 * 1024)
    assert q["retry"] == 660  # above the app's timeout: never delivered twice while running
    assert "Q_CLUSTER['workers'] = 2 (start-all sizing; was 4)" in changes
    assert any(c.startswith("Q_CLUSTER['retry'] = 660 (was unset") for c in changes)
    assert ns["START_ALL_SETTINGS_CHANGES"] == changes
    kept = {"INSTALLED_APPS": ["django_q"], "Q_CLUSTER": dict(APP_Q)}
    start_all_settings(kept, keep=("workers",))
    assert kept["Q_CLUSTER"]["workers"] == 4


def test_outside_start_all_the_apps_workers_stay():
    ns = {"INSTALLED_APPS": ["django_q"], "Q_CLUSTER": dict(APP_Q, retry=700)}
    changes = start_all_settings(ns)
    assert ns["Q_CLUSTER"] == dict(APP_Q, retry=700)
    assert not [c for c in changes if c.startswith("Q_CLUSTER")]


def test_the_apps_databases_and_caches_are_kept_and_tuned():
    own_db = {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "db",
              "PORT": "5432", "CONN_MAX_AGE": 0, "OPTIONS": {"sslmode": "require"}}
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}
    ns = {"DATABASES": {"default": dict(own_db)}, "CACHES": caches,
          "MIDDLEWARE": ["django.middleware.common.CommonMiddleware"]}
    changes = start_all_settings(ns)
    db = ns["DATABASES"]["default"]
    assert db["CONN_MAX_AGE"] == 0  # the app chose it (check warns about it)
    assert db["CONN_HEALTH_CHECKS"] is True and db["OPTIONS"] == {"sslmode": "require"}
    assert ns["CACHES"] is caches
    assert ns["MIDDLEWARE"] == [HEALTH_MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    assert changes == [
        f"MIDDLEWARE: {HEALTH_MIDDLEWARE} added first",
        "DATABASES['default']['CONN_HEALTH_CHECKS'] = True (was unset)",
    ]


def test_a_transaction_pooler_gets_what_it_needs_and_sqlite_what_django_supports(monkeypatch):
    import django

    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@pooler.example:6543/app")
    ns = {"DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}}
    changes = start_all_settings(ns)
    db = ns["DATABASES"]["default"]
    assert (db["HOST"], db["PORT"], db["DISABLE_SERVER_SIDE_CURSORS"]) == (
        "pooler.example", "6543", True)
    assert db["OPTIONS"]["prepare_threshold"] is None
    assert "DATABASES['default'] from DATABASE_URL (was sqlite3)" in changes
    monkeypatch.delenv("DATABASE_URL")
    fresh: dict = {}
    start_all_settings(fresh)
    options = fresh["DATABASES"]["default"]["OPTIONS"]
    assert ("transaction_mode" in options) == (django.VERSION >= (5, 1))
    assert options["timeout"] == 20
