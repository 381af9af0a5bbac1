import os

from supervisor.native import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "threeways.settings")
app = Celery("threeways")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
