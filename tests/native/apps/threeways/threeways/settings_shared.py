"""The django.tasks backend sharing the Celery-API app: one native_worker runs both."""

from .settings import *  # noqa: F401,F403
from .settings import TASKS

TASKS["default"]["OPTIONS"] = {**TASKS["default"]["OPTIONS"], "app": "threeways.celery:app"}
