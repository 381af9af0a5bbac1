import json
import os

from django.apps import AppConfig


def _mark(kind):
    def receiver(sender, task_result, **kwargs):
        path = os.environ.get("DT_MARKS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"signal": kind, "sender": sender.__name__,
                                    "task": task_result.task.name, "id": task_result.id,
                                    "status": str(task_result.status)}) + "\n")
    return receiver


class LettersConfig(AppConfig):
    name = "letters"

    def ready(self):
        try:
            from django.tasks.signals import task_enqueued, task_finished, task_started
        except ImportError:
            from django_tasks.signals import task_enqueued, task_finished, task_started
        for kind, signal in (("enqueued", task_enqueued), ("started", task_started),
                             ("finished", task_finished)):
            signal.connect(_mark(kind), weak=False)
