"""Reports built in the background and written to REPORTS_DIR."""

import os
from pathlib import Path

from app.worker import celery_app


def reports_dir() -> Path:
    path = Path(os.environ.get("REPORTS_DIR", "reports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@celery_app.task(bind=True)
def build_report(self, rows: int) -> dict:
    path = reports_dir() / f"report-{self.request.id}.txt"
    path.write_text("".join(f"row {n}\n" for n in range(rows)))
    return {"rows": rows, "path": str(path)}
