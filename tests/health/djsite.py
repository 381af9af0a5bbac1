"""A tiny Django site: the health middleware first, a plain view, and a view that must not run."""

from django.http import HttpResponse
from django.urls import path

from supervisor.contrib.django import healthz

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
DATABASES = {}
ROOT_URLCONF = "tests.health.djsite"
START_ALL_HEALTH_PATH = "/-/health"
MIDDLEWARE = [
    "supervisor.contrib.django.HealthMiddleware",
    "django.middleware.common.CommonMiddleware",
]


def home(request):
    return HttpResponse("hello from django\n")


def trap(request):
    raise RuntimeError("the health middleware must answer before any view runs")


urlpatterns = [
    path("", home),
    path("view-healthz", healthz),
    path("-/health", trap),
]
