"""A newsletter site with its own django-q2 setup (not made from start-all's templates)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the app writes (its SQLite file, the CSV exports) lives here.
VAR_DIR = Path(os.environ.get("NEWSLETTER_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "django_q",
    "newsletter",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "newsletter_site.urls"
WSGI_APPLICATION = "newsletter_site.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
    }
]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "newsletter.sqlite3",
    }
}

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # hashed names: a page using {% static %} fails (500) if collectstatic never ran
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

EXPORT_DIR = VAR_DIR / "exports"

Q_CLUSTER = {
    "name": "newsletter",
    "orm": "default",
    "workers": 4,
    # a digest to every subscriber takes minutes on big lists: 600 s, and retry above it
    "timeout": 600,
    "retry": 660,
    # never 2: a digest sent again e-mails every subscriber twice
    "max_attempts": 1,
    "error_reporter": {"sentry": {"dsn": os.environ.get("SENTRY_DSN", "")}},
    "save_limit": 100,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
