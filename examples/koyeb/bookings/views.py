"""A tiny booking site: each booking queues a confirmation e-mail; summaries are slow jobs."""

import json
from html import escape

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from bookings.models import Booking, Run, Summary
from bookings.queue import enqueue, enqueue_many
from supervisor.native import use_db_queue

PAGE = """<!doctype html><meta charset="utf-8"><title>start-all booking demo</title>
<h1>Bookings</h1>
<p>Each booking queues a confirmation e-mail (printed in the log by the worker).
Health: <a href="/healthz">/healthz</a>.</p>
<form method="post" action="/bookings">
<input name="name" placeholder="name" required> <input name="email" type="email"
placeholder="e-mail" required> <button>Book</button></form>
<form method="post" action="/summaries"><input name="text" size="40"
placeholder="text to summarise (a slow job)" required> <button>Summarise</button></form>
<table><tr><th>#</th><th>name</th><th>confirmation</th></tr>{rows}</table>
<h2>Summaries</h2><table><tr><th>#</th><th>status</th><th>result</th></tr>{summaries}</table>
"""


def _payload(request: HttpRequest) -> dict:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return request.POST.dict()


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    rows = "".join(
        f"<tr><td>{b.id}</td><td>{escape(b.name)}</td>"
        f"<td>{'sent ' + b.confirmed_at.strftime('%H:%M:%S') if b.confirmed_at else 'queued'}"
        "</td></tr>"
        for b in Booking.objects.order_by("-id")[:20]
    )
    summaries = "".join(
        f"<tr><td>{s.id}</td><td>{s.status}</td><td>{escape(s.result)}</td></tr>"
        for s in Summary.objects.order_by("-id")[:10]
    )
    return HttpResponse(PAGE.format(rows=rows, summaries=summaries))


@csrf_exempt  # a demo API without sessions or login
@require_http_methods(["POST"])
def bookings(request: HttpRequest) -> HttpResponse:
    data = _payload(request)
    name, email = str(data.get("name", "")).strip(), str(data.get("email", "")).strip()
    if not name or "@" not in email:
        return JsonResponse({"error": "name and a valid email are required"}, status=400)
    booking = Booking.objects.create(name=name[:100], email=email)
    task_id = enqueue("bookings.tasks.send_confirmation", booking.id)
    if request.content_type != "application/json":
        return HttpResponseRedirect("/")
    return JsonResponse({**booking.as_dict(), "task": task_id}, status=201)


@require_GET
def stats(request: HttpRequest) -> JsonResponse:
    """Counts, for dashboards and the memory benchmark."""
    return JsonResponse(
        {
            "queue": settings.TASK_QUEUE,
            "bookings": Booking.objects.count(),
            "confirmed": Booking.objects.filter(confirmed_at__isnull=False).count(),
            "summaries_done": Summary.objects.filter(status="done").count(),
        }
    )


@require_GET
def booking(request: HttpRequest, booking_id: int) -> JsonResponse:
    return JsonResponse(get_object_or_404(Booking, pk=booking_id).as_dict())


@csrf_exempt
@require_http_methods(["POST"])
def summaries(request: HttpRequest) -> HttpResponse:
    data = _payload(request)
    text = str(data.get("text", "")).strip()
    try:
        seconds = min(max(float(data.get("seconds", 5)), 0), 60)
    except (TypeError, ValueError):
        return JsonResponse({"error": "seconds must be a number"}, status=400)
    if not text:
        return JsonResponse({"error": "text is required"}, status=400)
    summary = Summary.objects.create(text=text, seconds=seconds)
    task_id = enqueue("bookings.tasks.summarize", summary.id)
    if request.content_type != "application/json":
        return HttpResponseRedirect("/")
    return JsonResponse({**summary.as_dict(), "task": task_id}, status=201)


@require_GET
def summary(request: HttpRequest, summary_id: int) -> JsonResponse:
    return JsonResponse(get_object_or_404(Summary, pk=summary_id).as_dict())


@csrf_exempt
@require_http_methods(["GET", "POST"])
def tallies(request: HttpRequest) -> JsonResponse:
    """POST {"count": N, "seconds": S}: queue N tally tasks. GET: what ran, where, how often
    (docs/scaling.md)."""
    if request.method == "POST":
        data = _payload(request)
        try:
            count = min(max(int(data.get("count", 1)), 0), 100_000)
            seconds = min(max(float(data.get("seconds", 0)), 0), 60)
        except (TypeError, ValueError):
            return JsonResponse({"error": "count and seconds must be numbers"}, status=400)
        calls = [{"n": i, "seconds": seconds} for i in range(count)]
        return JsonResponse({"queued": enqueue_many("bookings.tasks.tally", calls)}, status=201)
    jobs = Run.objects.filter(kind="job")
    per_task = jobs.values("task_id").annotate(runs=Count("id"))
    repeated = [row["task_id"] for row in per_task if row["runs"] > 1]
    span = jobs.aggregate(first=Min("at"), last=Max("at"))
    return JsonResponse({
        "runs": jobs.count(),
        "tasks": per_task.count(),
        "repeated": len(repeated),
        "repeated_on": _hosts_of(jobs.filter(task_id__in=repeated[:1000])),
        "by_host": {r["host"]: r["runs"] for r in jobs.values("host").annotate(runs=Count("id"))},
        "seconds": (span["last"] - span["first"]).total_seconds() if span["first"] else None,
        "ticks": _ticks(),
    })


def _hosts_of(runs) -> dict[str, list[str]]:
    """task id -> the hosts that ran it, for tasks that ran more than once."""
    hosts: dict[str, list[str]] = {}
    for task_id, host in runs.values_list("task_id", "host"):
        hosts.setdefault(task_id, []).append(host)
    return hosts


def _ticks() -> list[dict]:
    """Runs of the beat entry "tick"; with the native queue, one row per slot it claimed."""
    runs = Run.objects.filter(kind="tick")
    by_task = {r["task_id"]: r for r in runs.values("task_id", "host").annotate(runs=Count("id"))}
    if settings.TASK_QUEUE != "native" or not use_db_queue():
        first = {r["task_id"]: r["at"] for r in runs.values("task_id").annotate(at=Min("at"))}
        return sorted(
            ({"task_id": t, "runs": r["runs"], "host": r["host"], "at": first[t].timestamp()}
             for t, r in by_task.items()),
            key=lambda tick: tick["at"],
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM slot), task_id FROM start_all.cron_slots "
            "WHERE name = 'tick' ORDER BY slot"
        )
        slots = cursor.fetchall()
    return [
        {"slot": float(slot), "task_id": task_id, "runs": by_task.get(task_id, {}).get("runs", 0),
         "host": by_task.get(task_id, {}).get("host")}
        for slot, task_id in slots
    ]
