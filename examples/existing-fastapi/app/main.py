"""The reports API: POST /reports starts one, GET /reports/{id} says how it went."""

from celery.result import AsyncResult
from fastapi import FastAPI
from pydantic import BaseModel

from app.tasks import build_report
from app.worker import celery_app

app = FastAPI(title="reports")


class ReportRequest(BaseModel):
    rows: int = 10


@app.get("/")
def index() -> dict:
    return {"service": "reports"}


@app.post("/reports", status_code=202)
def start_report(request: ReportRequest) -> dict:
    return {"id": build_report.delay(request.rows).id}


@app.get("/reports/{report_id}")
def report_status(report_id: str) -> dict:
    result = AsyncResult(report_id, app=celery_app)
    return {"state": result.state, "result": result.result if result.successful() else None}
