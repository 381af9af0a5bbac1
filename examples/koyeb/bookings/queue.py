"""The one place that knows which queue runs the jobs (settings.TASK_QUEUE)."""

from django.conf import settings


def enqueue(func: str, *args: object) -> str:
    """Queue `func` (a dotted path) with `args`; the task id."""
    if settings.TASK_QUEUE == "celery":
        from demo.celery import app

        return app.send_task(func, args=args).id
    if settings.TASK_QUEUE == "native":
        from demo.native import app

        return app.send_task(func, args=args).id
    from django_q.tasks import async_task

    return async_task(func, *args)
