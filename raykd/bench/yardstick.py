"""The yardstick of ``raykd bench api``: a minimal FastAPI app doing what raykd's API does.

The same three endpoints as raykd's, with nothing but what the answer needs: a bearer token
compared with :func:`hmac.compare_digest`, one :mod:`sqlite3` connection to raykd's own
database file (made by raykd's migrations), and the same SQL for the same JSON:

- ``GET /api/v1/jobs/{id}``: the job's row by primary key, its labels and (queued) its
  queue position, as raykd's ``JobPublic`` with spec and result;
- ``GET /api/v1/jobs?limit=50``: the newest page (labels and queue positions of the page);
- ``POST /api/v1/jobs``: insert a row and its labels (no spec validation), answer the job.

Run as ``python -m raykd.bench.yardstick PORT DATABASE`` (token in ``RAYKD_TOKEN``) under
:data:`UVICORN_SETTINGS`, the settings raykd's bench server runs under. It imports nothing
of raykd beyond this module.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import sqlite3
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response

UVICORN_SETTINGS: dict[str, Any] = {"host": "127.0.0.1", "log_level": "warning",
                                    "access_log": False, "timeout_keep_alive": 300}
"""Both servers of the bench run under these (one process; keep-alive outlasts the phases)."""

COLUMNS = ("id", "name", "kind", "owner", "state", "priority", "max_run_s", "stage", "progress",
           "latest_metrics", "error", "note", "attempts", "created_at", "started_at",
           "finished_at")
FIELDS = ("id", "name", "kind", "owner", "state", "priority", "max_run_s", "labels",
          "queue_position", "stage", "progress", "latest_metrics", "error", "note", "attempts",
          "created_at", "started_at", "finished_at", "spec", "result")
"""raykd's ``JobPublic``, in its order."""
QUEUE_ORDER = "priority DESC, created_at ASC, id ASC"
POSITIONS_SQL = (f"SELECT id, pos FROM (SELECT id, row_number() OVER (ORDER BY {QUEUE_ORDER}) "
                 "AS pos FROM jobs WHERE state = 'queued') WHERE id IN ({marks})")
AHEAD_SQL = ("SELECT count(*) FROM jobs WHERE state = 'queued' AND (priority > ? OR "
             "(priority = ? AND (created_at < ? OR (created_at = ? AND id < ?))))")


def _view(row: sqlite3.Row, labels: dict[str, str], position: int | None,
          full: bool) -> dict[str, Any]:
    """The job as raykd's API shows it."""
    out = {k: row[k] for k in COLUMNS}
    out["latest_metrics"] = json.loads(row["latest_metrics"] or "{}")
    out["labels"], out["queue_position"] = labels, position
    out["spec"] = json.loads(row["spec"]) if full else None
    out["result"] = json.loads(row["result"]) if full and row["result"] is not None else None
    return {k: out[k] for k in FIELDS}


def _labels(db: sqlite3.Connection, ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {i: {} for i in ids}
    marks = ",".join("?" * len(ids))
    for job_id, key, value in db.execute(
            f"SELECT job_id, key, value FROM job_labels WHERE job_id IN ({marks})", ids):
        out[job_id][key] = value
    return out


def _job(db: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    position = None
    if row["state"] == "queued":
        p, c = row["priority"], row["created_at"]
        position = db.execute(AHEAD_SQL, (p, p, c, c, row["id"])).fetchone()[0] + 1
    return _view(row, _labels(db, [job_id])[job_id], position, full=True)


def _page(db: sqlite3.Connection, limit: int) -> dict[str, Any]:
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs ORDER BY created_at DESC, id DESC "
                      "LIMIT ?", (limit + 1,)).fetchall()
    more, rows = len(rows) > limit, rows[:limit]
    ids = [r["id"] for r in rows]
    labels = _labels(db, ids)
    positions = dict(db.execute(POSITIONS_SQL.format(marks=",".join("?" * len(ids))), ids))
    last = rows[-1] if more and rows else None
    cursor = (base64.urlsafe_b64encode(json.dumps([last["created_at"], last["id"]]).encode())
              .decode() if last is not None else None)
    return {"items": [_view(r, labels[r["id"]], positions.get(r["id"]), full=False) for r in rows],
            "next_cursor": cursor}


def _insert(db: sqlite3.Connection, body: dict[str, Any]) -> str:
    spec = body["spec"]
    name = body.get("name") or spec.get("name", "job")
    job_id = f"{name}-{uuid.uuid4().hex[:12]}"
    with db:
        db.execute("INSERT INTO jobs (id, name, kind, owner, state, priority, spec, created_at, "
                   "attempts, progress, latest_metrics, last_seq, cancel_requested, "
                   "events_offset, log_offset, max_run_s) VALUES "
                   "(?, ?, ?, 'admin', 'queued', ?, ?, ?, 0, 0.0, '{}', 0, 0, 0, 0, ?)",
                   (job_id, name, "sweep" if spec.get("sweep") else "run",
                    body.get("priority", 0), json.dumps(spec), time.time(), 86400.0))
        db.executemany("INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)",
                       [(job_id, k, v) for k, v in body.get("labels", {}).items()])
    return job_id


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data).encode(), status_code=status, media_type="application/json")


def create_yardstick(database: str, token: str) -> FastAPI:
    """The yardstick app on the SQLite file ``database``, for the bearer token ``token``."""
    db = sqlite3.connect(database, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA synchronous=NORMAL")  # raykd's engine's; the file is already in WAL mode
    expected = f"Bearer {token}".encode()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def check(request: Request) -> None:
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            raise HTTPException(401, "invalid token")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> Response:
        check(request)
        job = _job(db, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return _json(job)

    @app.get("/api/v1/jobs")
    async def list_jobs(request: Request, limit: int = 50) -> Response:
        check(request)
        return _json(_page(db, limit))

    @app.post("/api/v1/jobs")
    async def submit(request: Request) -> Response:
        check(request)
        return _json(_job(db, _insert(db, await request.json())), status=201)

    return app


def main() -> None:
    """``python -m raykd.bench.yardstick PORT DATABASE``."""
    import uvicorn

    port, database = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(create_yardstick(database, os.environ["RAYKD_TOKEN"]), port=port,
                **UVICORN_SETTINGS)


if __name__ == "__main__":
    main()
