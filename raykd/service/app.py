"""The app factory and ``run_server``: the control plane as one FastAPI app.

On start-up: the database is migrated (Alembic), Ray is reached (the configured address,
or a local head the service starts and owns), and the scheduler thread begins; it also
reconciles every unfinished job with Ray's view. On shutdown the scheduler stops and an
owned head is stopped with it (its running jobs end ``failed``, saying so; retry resumes
them). A crash of the service (``kill -9``) leaves the owned head and its jobs running; the
next start on the same storage adopts that head.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from raykd.core.states import ACTIVE_STATES
from raykd.service.capacity import ClusterView
from raykd.service.database import migrate
from raykd.service.deps import CurrentUser
from raykd.service.ray_head import OwnedHead, owned_head_token
from raykd.service.ray_jobs import RayJobs
from raykd.service.retention import Retention
from raykd.service.routes import audit, health, jobs
from raykd.service.scheduler import Scheduler
from raykd.service.settings import Settings
from raykd.service.state import ServiceState
from raykd.service.store import Store
from raykd.service.web import routes as web

log = logging.getLogger("raykd.service")


class BodyLimit:
    """Answers 413 when a request body passes ``limit`` bytes (declared or streamed).

    A body without a Content-Length (chunked) is read here, up to the limit, before the
    app sees it: an error raised while the app reads would become the app's 400.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await _too_large(self.limit, send)
                return
            await self.app(scope, receive, send)  # the server delivers no more than declared
            return
        buffered = await self._read(receive)
        if buffered is None:
            await _too_large(self.limit, send)
            return
        await self.app(scope, _replay(buffered, receive), send)

    async def _read(self, receive: Receive) -> list[Any] | None:
        """The request's body messages, or None once they pass the limit."""
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return None
            if not message.get("more_body", False):
                return messages


def _replay(messages: list[Any], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then whatever comes next (a disconnect)."""
    pending = list(messages)

    async def replay() -> Any:
        return pending.pop(0) if pending else await receive()

    return replay


async def _too_large(limit: int, send: Send) -> None:
    body = f'{{"detail": "request body larger than {limit} bytes (RAYKD_MAX_BODY_BYTES)"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def ensure_token(settings: Settings) -> Path | None:
    """With neither RAYKD_TOKEN nor RAYKD_USERS, make a token and keep it (0600) in storage."""
    if settings.token is not None or settings.users:
        return None
    path = settings.layout.service / "token"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    settings.token = SecretStr(path.read_text().strip())
    return path


def _ray(settings: Settings) -> tuple[RayJobs, OwnedHead | None]:
    """Ray's job API: the configured cluster, else the service's own head.

    The own head survives a crash of the service: a restart finds it again through
    ``.service/head.json`` (alive, the same process, answering our token) and adopts it
    with every job still running on it, instead of starting a second one.
    """
    token = settings.ray_token.get_secret_value() if settings.ray_token else None
    inflight = max(2, settings.threads // 2)  # Ray calls never take every API thread
    if settings.ray_address:
        return RayJobs(settings.ray_address, token=token, driver_command=settings.driver_command,
                       timeout_s=settings.ray_timeout_s, max_inflight=inflight), None
    # the own head's shell may not find `raykd` (a venv that is not activated): this interpreter
    own = f"{shlex.quote(sys.executable)} -m raykd"
    service_dir = settings.layout.service
    token_path = service_dir / "ray_token"
    token = owned_head_token(token_path, token)
    head = OwnedHead.attach(service_dir, token)
    if head is not None:
        log.info("raykd serve: reattached to its Ray head at %s (pid %d)", head.address, head.pid)
        return RayJobs(head.address, token=token, driver_command=own, timeout_s=settings.ray_timeout_s,
                       max_inflight=inflight), head
    head = OwnedHead.start(num_cpus=settings.ray_num_cpus, token_path=token_path,
                           temp_dir=Path(tempfile.mkdtemp(prefix="raykd-ray-")))
    try:
        head.wait_ready()
    except BaseException:
        head.stop()
        raise
    head.save()
    return RayJobs(head.address, token=token, driver_command=own, timeout_s=settings.ray_timeout_s,
                   max_inflight=inflight), head


STOPPED_WITH_SERVICE = ("stopped with the service: a clean stop of `raykd serve` stops its own "
                        "Ray head and the jobs on it; retry resumes the job from what it finished")


def _stop_head(store: Store, head: OwnedHead, *, mark_jobs: bool) -> None:
    """Stop the owned head (a clean stop of the service) and say so in the jobs it ends
    (``mark_jobs``: only when this service led, i.e. submitted them to this head)."""
    head.stop()
    if not mark_jobs:
        return
    for row in store.in_states(*ACTIVE_STATES):
        store.update(row.id, state="failed", finished_at=time.time(), error=STOPPED_WITH_SERVICE,
                     note="stopped with the service")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The control plane app (nothing starts until the app's lifespan begins)."""
    settings = settings or Settings()
    ensure_token(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        settings.storage.mkdir(parents=True, exist_ok=True)
        migrate(settings.db_url())
        store = Store(settings.db_url())
        ray, head = _ray(settings)
        scheduler = Scheduler(settings, store, ray)
        cluster = ClusterView(ray.address, getattr(ray, "_headers", None), settings.cluster_view_ttl_s)
        app.state.raykd = ServiceState(settings=settings, store=store, ray=ray, scheduler=scheduler, head=head,
                                       cluster=cluster)
        scheduler.start()
        retention = Retention(settings, store, ray, scheduler.lock)
        retention.start()
        try:
            yield
        finally:
            retention.stop()
            leading = scheduler.holds_lease()  # a standby's jobs are another service's to end
            scheduler.stop()
            if head is not None:
                _stop_head(store, head, mark_jobs=leading)

    app = FastAPI(title="raykd control plane", version="1", lifespan=lifespan,
                  description="Submit, queue, follow and manage ensemble distillation jobs on Ray.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # no CDN pages; schema below

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_schema(_user: CurrentUser) -> JSONResponse:
        """The OpenAPI schema, for a bearer token or a dashboard session (never anonymous).

        No /docs or /redoc: FastAPI's pages load Swagger UI / ReDoc from a CDN, and no page
        of this service loads a third-party script.
        """
        return JSONResponse(app.openapi())

    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(audit.router)
    app.include_router(web.router)  # the dashboard: pages and their static files, behind a session
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _errors(exc)}, status_code=422)

    for error in _data_errors():  # PostgreSQL refuses NUL bytes in text: a 400, never a 500
        app.add_exception_handler(error, _unstorable)
    return app


UNSTORABLE = ("the request holds a value the database cannot store or search for (a NUL byte, "
              "%00 or \\u0000, in an id, a name, a label or a filter?); send it without")


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": UNSTORABLE}, status_code=400)


def _data_errors() -> list[type[Exception]]:
    """The database errors that mean "this value cannot be stored or compared": SQLAlchemy's
    wrapper, and the driver's own (the store's precompiled reads and inserts raise it bare)."""
    from sqlalchemy.exc import DataError

    errors: list[type[Exception]] = [DataError]
    try:
        import psycopg
    except ImportError:
        return errors
    return [*errors, psycopg.DataError]


def _errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Field errors with their location and message (the input is echoed only when short)."""
    out = []
    for e in exc.errors():
        item = {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        given = e.get("input")
        if isinstance(given, str | int | float | bool) and len(str(given)) <= 200:
            item["input"] = given
        out.append(item)
    return out


def run_server(settings: Settings | None = None) -> None:
    """Serve the app with uvicorn on ``settings.host:settings.port`` (127.0.0.1 by default)."""
    import uvicorn

    settings = settings or Settings()
    saved = ensure_token(settings)
    if saved is not None:
        print(f"raykd serve: no RAYKD_TOKEN set; a token was generated and saved to {saved} "
              f"(export RAYKD_TOKEN=$(cat {saved}))", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=False)
