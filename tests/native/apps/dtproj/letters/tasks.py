import json
import os
import time

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


def _note(**fields):
    with open(os.environ["DT_MARKS"], "a") as f:
        f.write(json.dumps(fields) + "\n")


def _notes(**match):
    try:
        with open(os.environ["DT_MARKS"]) as f:
            rows = [json.loads(line) for line in f]
    except FileNotFoundError:
        return []
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


@task
def add(a, b):
    return a + b


@task(queue_name="mail")
def record(label):
    _note(record=label)
    return label


@task(takes_context=True, max_retries=2)
def flaky(context, key):
    _note(flaky=key, attempt=context.attempt)
    if context.attempt < 3:
        raise ConnectionError(f"attempt {context.attempt}")
    return context.attempt


@task
def boom():
    raise ValueError("boom")


@task
async def twice(x):
    return 2 * x


@task
def sleepy(key, seconds):
    _note(sleepy=key, pid=os.getpid())
    time.sleep(seconds)
    return key


@task
def tick():
    _note(tick=time.time())


@task(soft_time_limit=0.5)
def overrun():
    time.sleep(30)
