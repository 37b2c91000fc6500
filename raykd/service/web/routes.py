"""The dashboard: server-rendered pages over the control plane's own store and API.

Pages (Jinja2 templates in ``templates/``, a little JavaScript in ``static/``):
``/login``, ``/jobs`` (the list, live), ``/jobs/{id}`` (a run or a sweep, live),
``/jobs/{id}/spec.yaml``, ``/compare`` and ``/submit``. Everything but the login page and
its stylesheet needs a session (see :mod:`raykd.service.web.sessions`): a page without
one redirects (303) to ``/login``; a static file without one is refused (401). The
browser's scripts call the REST API (``/api/v1``) with the session cookie and the
page's CSRF value, and follow jobs through the API's Server-Sent Events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from raykd.core.spec_io import SpecTextError, read_spec_text
from raykd.core.states import ACTIVE_STATES, FINAL_STATES, STATES, UNFINISHED_STATES
from raykd.service.audit import record
from raykd.service.auth import auth_limit, client_address, secret_matches, user_for_token
from raykd.service.deps import State
from raykd.service.job_views import public, public_many
from raykd.service.ownership import listed_owner, visible_job
from raykd.service.schemas import JobPublic
from raykd.service.state import ServiceState
from raykd.service.web.sessions import COOKIE, CSRF_HEADER, Session, request_session, sessions_of
from raykd.service.web.views import compare_chart, spec_yaml, summary

HERE = Path(__file__).parent
STATIC = HERE / "static"
PUBLIC_STATIC = ("login.css",)
LIST_LIMIT = 200
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would send "Origin: null" on our own forms
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["job_states"] = {"final": list(FINAL_STATES), "active": list(ACTIVE_STATES),
                                       "unfinished": list(UNFINISHED_STATES)}
"""raykd.core.states' sets, in every page's ``<meta name="raykd-states">`` for the scripts."""


# --- sessions ---------------------------------------------------------------------------


def _local_path(target: str | None) -> str:
    """``target`` when it is a path of this site (``/jobs?x``), else ``/jobs``.

    Not ``//host``, a backslash or a control character or space (browsers drop tabs and
    newlines from a URL, so ``/<tab>/host`` would leave the site).
    """
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(ord(c) <= 32 for c in target)):
        return "/jobs"
    return target


def page_session(request: Request) -> Session:
    """The page's session; without one, a 303 to the login page (which comes back here)."""
    _, session = request_session(request)
    if session is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, "log in first", headers={"Location": f"/login?next={quote(back)}"})
    return session


def form_session(request: Request) -> Session:
    """The session of a script's request that changes state: the CSRF header must match."""
    _, session = request_session(request)
    if session is None:
        raise HTTPException(401, "log in first")
    if not secret_matches(request.headers.get(CSRF_HEADER, ""), session.csrf):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
    return session


PageSession = Annotated[Session, Depends(page_session)]


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin header)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"


def render(request: Request, name: str, *, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _page(request: Request, session: Session, name: str, active: str,
          **context: Any) -> HTMLResponse:
    return render(request, name, user=session.user, csrf=session.csrf, active=active, **context)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body as a mapping (the first value of each field)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    _, session = request_session(request)
    if session is not None:
        return RedirectResponse(_local_path(next), status_code=303)
    return render(request, "login.html", next=_local_path(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token; on success a new session and its cookie, then on to ``next``."""
    if not _same_origin(request):
        raise HTTPException(403, "the login form must come from this site")
    form = await _form(request)
    target = _local_path(form.get("next"))
    address = client_address(request)
    wait = auth_limit(request).retry_after(address)
    if wait is not None:
        limited = render(request, "login.html", status_code=429, next=target,
                         error=f"Too many failed logins from this address: try again in {wait} s.")
        limited.headers["Retry-After"] = str(wait)
        return limited
    user = user_for_token(request.app.state.raykd.settings, form.get("token", "").strip())
    if user is None:
        auth_limit(request).failed(address)
        return render(request, "login.html", status_code=401, next=target,
                      error="That token is not valid for this service.")
    old, _ = request_session(request)
    sessions = sessions_of(request.app)
    sessions.drop(old)
    session_id, _ = sessions.create(user)
    await run_in_threadpool(record, request.app.state.raykd.store, user.name, "login", None, address)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (the form carries the page's CSRF value) and forget the cookie."""
    session_id, session = request_session(request)
    form = await _form(request)
    if session is not None and not secret_matches(form.get("csrf", ""), session.csrf):
        raise HTTPException(403, "missing or wrong CSRF value")
    sessions_of(request.app).drop(session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/static/{name:path}")
def static(name: str, request: Request) -> Response:
    """The dashboard's scripts and styles: only with a session (the login page's CSS without)."""
    if name not in PUBLIC_STATIC and request_session(request)[1] is None:
        return Response("log in first", status_code=401, media_type="text/plain")
    root = STATIC.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers={"Cache-Control": "no-cache",
                                       "X-Content-Type-Options": "nosniff"})


# --- pages ------------------------------------------------------------------------------


def _rows(state: ServiceState, session: Session, status: str | None,
          limit: int = LIST_LIMIT) -> list[JobPublic]:
    rows, _ = state.store.page(owner=listed_owner(session.user), state=status, name=None,
                               labels={}, limit=limit, cursor=None, ascending=False)
    return public_many(state, rows)  # one query for the labels, one for the queue: not per row


def _full(state: ServiceState, session: Session, job_id: str) -> tuple[JobPublic, dict[str, Any] | None]:
    """The job with its spec and result, and the summary of its result tables."""
    job = public(state, visible_job(state.store, session.user, job_id), full=True)
    return job, summary(state.settings.storage, job)


@router.get("/")
def home(_session: PageSession) -> Response:
    return RedirectResponse("/jobs", status_code=303)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, session: PageSession, state: State,
              status: Annotated[str | None, Query(alias="state")] = None) -> Response:
    state_filter = status if status in STATES else None
    return _page(request, session, "jobs.html", "jobs", jobs=_rows(state, session, state_filter),
                 state_filter=state_filter, states=STATES, limit=LIST_LIMIT)


@router.get("/partials/jobs", response_class=HTMLResponse)
def jobs_rows(request: Request, session: PageSession, state: State,
              status: Annotated[str | None, Query(alias="state")] = None) -> Response:
    """The jobs table's rows (the jobs page swaps them in when events say something changed)."""
    state_filter = status if status in STATES else None
    return render(request, "_job_rows.html", jobs=_rows(state, session, state_filter),
                  state_filter=state_filter)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, session: PageSession, state: State) -> Response:
    """A run's page, or a sweep's (the kind decides the template)."""
    job, numbers = _full(state, session, job_id)
    return _page(request, session, "sweep.html" if job.kind == "sweep" else "job.html", "jobs",
                 job=job, spec_yaml=spec_yaml(job.spec), final=FINAL_STATES, summary=numbers)


@router.get("/partials/jobs/{job_id}/result", response_class=HTMLResponse)
def job_result(job_id: str, request: Request, session: PageSession, state: State) -> Response:
    job, numbers = _full(state, session, job_id)
    return render(request, "_result.html", job=job, summary=numbers)


@router.get("/jobs/{job_id}/spec.yaml")
def spec_download(job_id: str, session: PageSession, state: State) -> Response:
    job = public(state, visible_job(state.store, session.user, job_id), full=True)
    return Response(spec_yaml(job.spec), media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.yaml"',
                             "Cache-Control": "no-store"})


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, session: PageSession, state: State,
                 ids: Annotated[list[str] | None, Query(alias="id", max_length=20)] = None,
                 ) -> Response:
    """Pick finished jobs; two or more picked: their students side by side."""
    done = _rows(state, session, "succeeded")
    visible = {j.id for j in done}
    picked = [i for i in dict.fromkeys(ids or []) if i in visible]
    compared = []
    for job_id in picked:
        job, numbers = _full(state, session, job_id)
        compared.append({"job": job, "summary": numbers})
    chart = compare_chart(compared) if len(compared) >= 2 else None
    return _page(request, session, "compare.html", "compare", done=done, picked=set(picked),
                 compared=compared, chart=chart, asked=bool(ids))


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request, session: PageSession) -> Response:
    examples = {}
    for path in sorted((HERE.parent.parent / "examples").glob("*.yaml")):
        examples[path.stem] = path.read_text(encoding="utf-8")
    return _page(request, session, "submit.html", "submit", examples=examples)


@router.post("/web/parse-spec")
async def parse_spec(request: Request,
                     _session: Annotated[Session, Depends(form_session)]) -> Response:
    """YAML or JSON text -> the spec as JSON and the line of every field (for error marks).

    Validation is the API's (the page posts the result to ``/api/v1/jobs``); this only
    reads the text, which a browser cannot do for YAML without a library.
    """
    try:
        body = json.loads(await request.body())
        text = body["text"]
        if not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise HTTPException(422, 'send {"text": "<spec as YAML or JSON>"}') from None
    try:
        spec, lines = read_spec_text(text)
    except SpecTextError as err:
        return JSONResponse({"detail": [{"loc": ["text"], "msg": str(err), "line": err.line}]},
                            status_code=422)
    return JSONResponse({"spec": spec, "lines": lines})
