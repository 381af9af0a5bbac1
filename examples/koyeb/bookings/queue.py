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


def enqueue_many(func: str, calls: list[dict], chunk: int = 1000) -> int:
    """Queue `func` once per kwargs dict in `calls`, `chunk` at a time (native: one INSERT per
    chunk); how many were queued. Native and Celery only."""
    if settings.TASK_QUEUE == "celery":
        from demo.celery import app
    else:
        from demo.native import app
    task = app.tasks[func]
    for start in range(0, len(calls), chunk):
        from supervisor.native import group

        group(task.s(**kwargs) for kwargs in calls[start : start + chunk]).apply_async()
    return len(calls)
