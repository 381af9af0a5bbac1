"""django-q2 on the ORM broker, DATABASE_URL's PostgreSQL: the chaos suite's qcluster."""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ["DATABASE_URL"])
SECRET_KEY = "chaos-suite-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django_q"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": _url.path.lstrip("/"),
    "USER": unquote(_url.username or ""), "PASSWORD": unquote(_url.password or ""),
    "HOST": _url.hostname, "PORT": _url.port or 5432,
}}
USE_TZ = True
Q_CLUSTER = {"name": "chaos", "workers": 1, "orm": "default", "timeout": 10, "retry": 20,
             "poll": 0.2, "catch_up": False}
