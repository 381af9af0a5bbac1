"""What the Django test projects here share (dbwproj, djproj, dtproj, threeways): test-only
basics and DATABASES on the PostgreSQL test database that NATIVE_TEST_DB_URL names."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True


def postgres(**extra) -> dict:
    """DATABASES with "default" on NATIVE_TEST_DB_URL (plus `extra` keys)."""
    url = urlsplit(os.environ["NATIVE_TEST_DB_URL"])
    return {"default": {"ENGINE": "django.db.backends.postgresql",
                        "NAME": url.path.lstrip("/"), "USER": url.username or "postgres",
                        "HOST": url.hostname or "127.0.0.1", "PORT": str(url.port or 5432),
                        **extra}}
