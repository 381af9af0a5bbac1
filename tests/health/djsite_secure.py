"""A Django site deployed as on a platform: one allowed host, HTTPS redirect behind the proxy's
X-Forwarded-Proto, and a home page that fails (500) while $BROKEN_FLAG exists."""

import os

from django.http import HttpResponse
from django.urls import path

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["app.example"]
SECURE_SSL_REDIRECT = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
INSTALLED_APPS = []
DATABASES = {}
ROOT_URLCONF = "tests.health.djsite_secure"
MIDDLEWARE = [
    "supervisor.contrib.django.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]


def home(request):
    if os.path.exists(os.environ["BROKEN_FLAG"]):
        raise RuntimeError("a page that cannot render (say, a missing static manifest)")
    return HttpResponse("home\n")


urlpatterns = [path("", home)]
