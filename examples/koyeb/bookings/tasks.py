"""Background tasks: plain functions, run by django-q2 (default) or Celery (TASK_QUEUE=celery).

Models are imported inside the functions so that Celery can register this module before
Django is set up (see demo/celery.py).
"""

import logging
import socket
import time
from datetime import timedelta

from django.core.mail import send_mail
from django.utils import timezone

log = logging.getLogger(__name__)


def send_confirmation(booking_id: int) -> str:
    from bookings.models import Booking

    booking = Booking.objects.get(pk=booking_id)
    send_mail(
        subject=f"Booking #{booking.id} confirmed",
        message=f"Hello {booking.name},\n\nyour booking #{booking.id} is confirmed.\n",
        from_email=None,
        recipient_list=[booking.email],
    )
    booking.confirmed_at = timezone.now()
    booking.save(update_fields=["confirmed_at"])
    return booking.email


def summarize(summary_id: int) -> str:
    """Stands in for a call to a language model: slow, and worth finishing once started."""
    from bookings.models import Summary

    summary = Summary.objects.get(pk=summary_id)
    summary.status = "running"
    summary.attempts += 1
    summary.save(update_fields=["status", "attempts"])
    deadline = time.monotonic() + summary.seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
    words = summary.text.split()
    summary.result = f"{len(words)} words: {' '.join(words[:12])}"
    summary.status = "done"
    summary.finished_at = timezone.now()
    summary.save(update_fields=["result", "status", "finished_at"])
    return summary.result


def cleanup_old_records(days: int = 30) -> int:
    """Daily: forget bookings and finished summaries older than `days`."""
    from bookings.models import Booking, Summary

    cutoff = timezone.now() - timedelta(days=days)
    removed = Booking.objects.filter(created_at__lt=cutoff).delete()[0]
    removed += Summary.objects.filter(status="done", finished_at__lt=cutoff).delete()[0]
    log.info("cleanup: removed %d records older than %d days", removed, days)
    return removed


def tally(task, n: int = 0, kind: str = "job", seconds: float = 0.0) -> int:
    """Record this run (bound task: `task.request.id`); `seconds` of work first, if any."""
    from bookings.models import Run

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    Run.objects.create(task_id=task.request.id or "", kind=kind, n=n, host=socket.gethostname())
    return n
