"""A FastAPI app that queues work on the native queue."""

import os

from fastapi import FastAPI

from supervisor.native import AsyncResult, Celery

celery = Celery("fastapp", broker=os.environ["NATIVE_TEST_DB_URL"])
celery.conf.task_default_queue = "fastapi"
api = FastAPI()


@celery.task
def slugify(title: str) -> str:
    return "-".join(title.lower().split())


@api.post("/slugs")
def create(title: str) -> dict:
    return {"id": slugify.delay(title).id}


@api.get("/slugs/{task_id}")
def read(task_id: str) -> dict:
    result = AsyncResult(task_id, app=celery)
    return {"state": result.state, "result": result.result if result.successful() else None}
