# as Celery's Django docs recommend: the app is created when Django starts
from .celery import app as celery_app

__all__ = ["celery_app"]
