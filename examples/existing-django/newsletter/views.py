import json

from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django_q.models import Task
from django_q.tasks import async_task

from newsletter.models import Subscriber


def index(request):
    return render(request, "newsletter/index.html", {"count": Subscriber.objects.count()})


@csrf_exempt
def subscribe(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    email = json.loads(request.body)["email"]
    subscriber, _ = Subscriber.objects.get_or_create(email=email)
    return JsonResponse({"id": subscriber.id}, status=201)


@csrf_exempt
def start_export(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    task_id = async_task("newsletter.tasks.export_subscribers")
    return JsonResponse({"task": task_id}, status=202)


def export_status(request, task_id):
    task = Task.get_task(task_id)
    if task is None:
        return JsonResponse({"done": False})
    return JsonResponse({"done": True, "success": task.success, "result": task.result})
