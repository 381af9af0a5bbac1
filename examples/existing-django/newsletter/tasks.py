"""The site's background jobs, run by django-q2."""

import csv
import logging

from django.conf import settings

from newsletter.models import Subscriber

log = logging.getLogger(__name__)


def export_subscribers() -> str:
    """Write every subscriber to a CSV file in EXPORT_DIR; its path is the result."""
    settings.EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.EXPORT_DIR / "subscribers.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        for subscriber in Subscriber.objects.order_by("id"):
            writer.writerow([subscriber.email, subscriber.created_at.isoformat()])
    return str(path)


def send_digest() -> int:
    """The weekly digest (here: logged, one line per subscriber)."""
    count = 0
    for subscriber in Subscriber.objects.iterator():
        log.info("digest to %s", subscriber.email)
        count += 1
    return count
