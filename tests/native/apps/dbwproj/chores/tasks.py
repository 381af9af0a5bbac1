import os
import time

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


def _note(line):
    with open(os.environ["DBW_MARKS"], "a") as f:
        f.write(line + "\n")


@task
def slow(key, seconds):
    _note(f"start {key}")
    time.sleep(seconds)
    _note(f"done {key}")
    return key
