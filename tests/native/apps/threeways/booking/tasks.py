"""The same task three ways (shown in docs/native-worker.md, run by test_three_ways.py)."""

from supervisor.native import shared_task

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task


def confirm(booking_id):
    return f"booking {booking_id} confirmed"


@shared_task(max_retries=3)
def confirm_booking(booking_id):
    return confirm(booking_id)


@task
def confirm_booking_task(booking_id):
    return confirm(booking_id)
