"""The REST client (raykd.client) and its CLI commands, against httpx.MockTransport.

No server: the SSE parser, reconnects that neither lose nor repeat an event, error mapping,
the token never shown, downloads, the CLI commands' output and exit codes, and import
hygiene (the API bench's tests: tests/e2e/bench/test_api.py). A real-server end-to-end test
lives with the server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from raykd.cli import app
from raykd.client import (
    RaykdAPIError,
    RaykdClient,
    RaykdConnectionError,
    RaykdTimeoutError,
    iter_sse,
)
from raykd.core.errors import UserError, user_message
from raykd.core.spec import parse_spec
from tests.helpers.imports import assert_imports_none_of

TOKEN = "s3cret-t0ken-do-not-show"
URL = "http://raykd.test"
SPEC = {
    "name": "tiny",
    "data": {"dataset": "digits"},
    "teachers": [{"model": {"name": "mlp", "hidden": [8]}, "seed": 1}],
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "methods": [{"method": "kd"}],
}


def job_json(job_id: str = "j1", state: str = "queued", **extra: Any) -> dict[str, Any]:
    """A JobPublic as the service answers it."""
    return {"id": job_id, "name": "tiny", "kind": "run", "owner": "admin", "state": state,
            "priority": 0, "labels": {}, "created_at": 1_700_000_000.0, **extra}


def sse(*events: dict[str, Any]) -> bytes:
    """Events as an SSE body (as the service writes them)."""
    return b"".join(
        f"id: {e['seq']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def event(seq: int, kind: str = "message", **fields: Any) -> dict[str, Any]:
    """An event mapping of ``raykd.core.events``."""
    base = {"seq": seq, "time": 1.0, "job_id": "j1", "type": kind}
    defaults = {"message": {"text": f"line {seq}"},
                "job_finished": {"result": "/r/result.json", "seconds": 1.0},
                "job_failed": {"kind": "bug", "message": "boom"}}
    return {**base, **defaults.get(kind, {}), **fields}


class Dropping(httpx.SyncByteStream):
    """A response body that sends ``chunks`` and then loses the connection."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def client_for(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> RaykdClient:
    """A client whose requests go to ``handler``; reconnects without pauses."""
    client = RaykdClient(URL, kwargs.pop("token", TOKEN), transport=httpx.MockTransport(handler),
                         **kwargs)
    client.reconnect_delay = 0.0
    client.poll_s = 0.0
    return client


def refused_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the SSE parser ---------------------------------------------------------------------------


def test_sse_parser_joins_data_lines_skips_comments_and_carries_ids() -> None:
    lines = [": keepalive", "id: 1", "event: message", "data: first", "data:second", "",
             ": keepalive", "", "data: no id or event", "", "id: 7", "event: x", "",
             "data: after an empty event\r", "", "id: 9", "data: unterminated"]
    got = list(iter_sse(lines))
    assert [(m.id, m.event, m.data) for m in got] == [
        ("1", "message", "first\nsecond"),
        ("1", "message", "no id or event"),          # the last id carries over
        ("7", "message", "after an empty event"),    # an event without data is not dispatched
    ]


def test_sse_parser_keeps_colons_in_values_and_drops_only_one_space() -> None:
    got = list(iter_sse(['data:  {"a": "b:c"}', "", "retry: 10", "unknown", "data: x", ""]))
    assert [m.data for m in got] == [' {"a": "b:c"}', "x"]


# --- events: reconnect without loss or repeats ------------------------------------------------


def test_events_reconnect_with_last_event_id_after_a_dropped_connection() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        assert request.url.path == "/api/v1/jobs/j1/events"
        if len(requests) == 1:
            torn = b'id: 3\nevent: message\ndata: {"seq": 3, "ty'  # cut mid-event
            body = Dropping(b": keepalive\n\n", sse(event(1), event(2)), torn)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
        # the server resends 2 (must be skipped), then the rest
        body = sse(event(2), event(3), event(4, "epoch", student=0, epoch=1, epochs=1),
                   event(5, "job_finished"))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with client_for(handler) as client:
        got = list(client.events("j1"))
    assert [e.seq for e in got] == [1, 2, 3, 4, 5]
    assert [e.type for e in got] == ["message"] * 3 + ["epoch", "job_finished"]
    assert "last-event-id" not in requests[0].headers
    assert requests[1].headers["Last-Event-ID"] == "2"
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in requests)


def test_events_after_resumes_and_a_clean_end_of_a_final_job_stops() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("Last-Event-ID")))
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=sse(event(6)) if len(seen) == 1 else b"")
        return httpx.Response(200, json=job_json(state="cancelled" if len(seen) > 2 else "running"))

    with client_for(handler) as client:
        got = [e.seq for e in client.events("j1", after=5)]
    assert got == [6]
    # stream 1 (after 5) ends early, job still running -> reconnect after 6, job final -> stop
    assert seen == [("/api/v1/jobs/j1/events", "5"), ("/api/v1/jobs/j1", None),
                    ("/api/v1/jobs/j1/events", "6"), ("/api/v1/jobs/j1", None)]


def test_events_give_up_after_the_reconnect_budget_with_one_line() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused")

    with client_for(handler) as client:
        client.reconnect_tries = 2
        with pytest.raises(RaykdConnectionError) as info:
            list(client.events("j1"))
    assert len(calls) == 3
    assert URL in str(info.value) and "RAYKD_URL" in str(info.value)


def test_events_retry_a_restarting_service_but_not_a_missing_job() -> None:
    answers = iter([httpx.Response(503, json={"detail": "starting"}),
                    httpx.Response(200, content=sse(event(1, "job_failed")))])
    with client_for(lambda r: next(answers)) as client:
        assert [e.type for e in client.events("j1")] == ["job_failed"]
    with client_for(lambda r: httpx.Response(404, json={"detail": "no job 'j1'"})) as client:
        with pytest.raises(RaykdAPIError, match="404 Not Found: no job 'j1'"):
            list(client.events("j1"))


# --- logs -------------------------------------------------------------------------------------


def test_follow_logs_resumes_at_the_byte_where_the_connection_dropped() -> None:
    offsets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            assert request.url.params["follow"] == "true"
            offsets.append(request.url.params["offset"])
            if len(offsets) == 1:
                return httpx.Response(200, stream=Dropping("line1\nlé".encode()))
            return httpx.Response(200, content=b"ne2\nlast")
        return httpx.Response(200, json=job_json(state="succeeded"))

    with client_for(handler) as client:
        lines = list(client.follow_logs("j1"))
    assert lines == ["line1", "léne2", "last"]
    assert offsets == ["0", str(len("line1\nlé".encode()))]


def test_logs_pass_offset_and_tail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert dict(request.url.params) == {"offset": "10", "tail": "2"}
        return httpx.Response(200, text="a\nb\n")

    with client_for(handler) as client:
        assert client.logs("j1", offset=10, tail=2) == "a\nb\n"


# --- errors and the token ---------------------------------------------------------------------


@pytest.mark.parametrize(("status", "detail", "shown"), [
    (401, "missing or invalid bearer token", "401 Unauthorized: missing or invalid bearer token"),
    (403, "job j1 belongs to another user", "403 Forbidden: job j1 belongs to another user"),
    (404, "no job 'j1'", "404 Not Found: no job 'j1'"),
    (409, "job j1 is running; only a queued job can change", "409 Conflict: job j1 is running"),
    (422, [{"loc": ["body", "priority"], "msg": "Input should be less than or equal to 100"}],
     "422 Unprocessable Entity: body.priority: Input should be less than or equal to 100"),
])
def test_http_errors_become_one_line_api_errors(status: int, detail: Any, shown: str) -> None:
    with client_for(lambda r: httpx.Response(status, json={"detail": detail})) as client:
        with pytest.raises(RaykdAPIError) as info:
            client.set_priority("j1", 500)
    err = info.value
    assert isinstance(err, UserError)
    assert (err.status_code, err.detail) == (status, detail)
    assert str(err).startswith(shown) and "\n" not in str(err)
    assert user_message(err) == str(err)
    assert TOKEN not in str(err) and TOKEN not in repr(err)


def test_a_non_json_error_body_and_a_missing_token_are_explained() -> None:
    with client_for(lambda r: httpx.Response(502, text="<html>Bad gateway</html>")) as client:
        with pytest.raises(RaykdAPIError, match="502 Bad Gateway: <html>Bad gateway</html>"):
            client.get("j1")
    with client_for(lambda r: httpx.Response(401, json={"detail": "no token"}), token="") as client:
        assert "authorization" not in {k.lower() for k in client._http.headers}
        with pytest.raises(RaykdAPIError, match="set RAYKD_TOKEN or pass --token"):
            client.get("j1")


def test_connection_refused_is_one_line_naming_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = refused_url()
    monkeypatch.setenv("RAYKD_URL", url)
    monkeypatch.setenv("RAYKD_TOKEN", TOKEN)
    with RaykdClient(timeout=5) as client, pytest.raises(RaykdConnectionError) as info:
        client.jobs()
    text = str(info.value)
    assert isinstance(info.value, UserError)
    assert url in text and "RAYKD_URL" in text and "\n" not in text
    assert TOKEN not in text


def test_the_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYKD_TOKEN", TOKEN)
    client = RaykdClient("http://alice:pw-in-url@example.test:8000/")
    assert repr(client) == "RaykdClient(url='http://example.test:8000', token=set)"
    assert TOKEN not in repr(client) and "pw-in-url" not in repr(client)
    assert TOKEN not in repr(client._http.headers)  # httpx masks Authorization
    assert client._http.headers["Authorization"] == f"Bearer {TOKEN}"
    assert repr(RaykdClient("http://x.test", "")) == "RaykdClient(url='http://x.test', token=unset)"


def test_cli_error_output_is_one_line_without_the_token() -> None:
    url = refused_url()
    result = CliRunner().invoke(app, ["status", "j1", "--url", url, "--token", TOKEN])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot reach the raykd service at {url} (")
    assert TOKEN not in result.output


def test_a_bad_url_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not an http"):
        RaykdClient("127.0.0.1:8000")


# --- requests and answers ---------------------------------------------------------------------


def test_submit_sends_the_spec_options_and_idempotency_key() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json=job_json("mine", labels={"team": "kd"}, queue_position=1))

    with client_for(handler) as client:
        job = client.submit(parse_spec(SPEC), name="n1", priority=5, labels={"team": "kd"},
                            job_id="mine", idempotency_key="k-1")
        client.submit(SPEC)
    assert (job.id, job.state, job.queue_position) == ("mine", "queued", 1)
    first, second = (json.loads(r.content) for r in sent)
    assert parse_spec(first.pop("spec")) == parse_spec(SPEC)
    assert first == {"name": "n1", "priority": 5, "labels": {"team": "kd"}, "job_id": "mine"}
    assert sent[0].headers["Idempotency-Key"] == "k-1" and sent[0].method == "POST"
    assert second == {"spec": SPEC, "priority": 0, "labels": {}}
    assert "idempotency-key" not in sent[1].headers


def test_jobs_filters_and_iter_jobs_follows_cursors() -> None:
    pages = {None: (["a", "b"], "c2"), "c2": (["c"], None)}
    queries: list[list[tuple[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(list(request.url.params.multi_items()))
        ids, nxt = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": [job_json(i) for i in ids], "next_cursor": nxt})

    with client_for(handler) as client:
        got = [j.id for j in client.iter_jobs(state="queued", labels={"a": "1", "b": "2"},
                                              limit=2)]
    assert got == ["a", "b", "c"]
    assert queries[0] == [("limit", "2"), ("order", "desc"), ("state", "queued"),
                          ("label", "a=1"), ("label", "b=2")]
    assert ("cursor", "c2") in queries[1]


def test_job_actions_use_their_routes() -> None:
    routes: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        routes.append((request.method, request.url.raw_path.decode()))
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/metrics"):
            return httpx.Response(200, json=[{"seq": 3, "student": 0, "epoch": 1,
                                              "metrics": {"val_accuracy": 0.9}}])
        return httpx.Response(200, json=job_json("a/b", state="cancelled"))

    with client_for(handler) as client:
        assert client.cancel("a/b").state == "cancelled"
        assert client.retry("a/b").id == "a/b"
        assert client.set_priority("a/b", 3).state == "cancelled"
        assert client.delete("a/b") is None
        assert client.metrics("a/b")[0].metrics == {"val_accuracy": 0.9}
    assert routes == [("POST", "/api/v1/jobs/a%2Fb/cancel"), ("POST", "/api/v1/jobs/a%2Fb/retry"),
                      ("PATCH", "/api/v1/jobs/a%2Fb"), ("DELETE", "/api/v1/jobs/a%2Fb"),
                      ("GET", "/api/v1/jobs/a%2Fb/metrics")]


def test_wait_polls_until_final_or_times_out() -> None:
    states = iter(["queued", "running", "succeeded"])
    with client_for(lambda r: httpx.Response(200, json=job_json(state=next(states)))) as client:
        assert client.wait("j1").state == "succeeded"
    with client_for(lambda r: httpx.Response(200, json=job_json(state="running"))) as client:
        with pytest.raises(RaykdTimeoutError, match="still running"):
            client.wait("j1", timeout=0.05)


def test_download_writes_whole_files_and_refuses_escaping_paths(tmp_path: Path) -> None:
    files = {"result.json": b'{"ok": true}', "students/0/model.safetensors": b"\x00" * 1000}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1/jobs/j1/artifacts")
        if not path:
            return httpx.Response(200, json=[{"path": p, "size": len(b)} for p, b in files.items()])
        return httpx.Response(200, content=files[path.lstrip("/")])

    with client_for(handler) as client:
        paths = client.download_all("j1", tmp_path / "out")
        assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == list(files)
        assert all(p.read_bytes() == files[p.relative_to(tmp_path / "out").as_posix()]
                   for p in paths)
        assert client.download("j1", "result.json", tmp_path).name == "result.json"
        files["../evil"] = b"x"
        with pytest.raises(UserError, match="leaves"):
            client.download_all("j1", tmp_path / "out2")
    assert not (tmp_path / "evil").exists()
    assert not list(tmp_path.rglob("*.part"))

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Dropping(b"half"))

    with client_for(broken) as client, pytest.raises(RaykdConnectionError):
        client.download("j1", "result.json", tmp_path / "partial.json")
    assert not (tmp_path / "partial.json").exists() and not list(tmp_path.glob(".*part"))


# --- CLI commands -----------------------------------------------------------------------------


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[..., httpx.Response]], None]:
    """Point the CLI's client at a handler."""

    def install(handler: Callable[[httpx.Request], httpx.Response]) -> None:
        monkeypatch.setattr("raykd.cli.control.make_client",
                            lambda url, token: client_for(handler, token=token or TOKEN))

    return install


@pytest.mark.parametrize(("final", "code"), [("succeeded", 0), ("failed", 1), ("cancelled", 1)])
def test_watch_prints_event_lines_and_exits_by_the_final_state(fake_cli: Any, final: str,
                                                               code: int) -> None:
    last = event(3, "job_finished") if final == "succeeded" else event(3, "job_failed")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=sse(
                event(1, "stage_started", stage="data"),
                event(2, "epoch", student=0, epoch=1, epochs=2, label="kd",
                      metrics={"train_loss": 0.5, "val_accuracy": 0.75}), last))
        return httpx.Response(200, json=job_json(state=final))

    fake_cli(handler)
    result = CliRunner().invoke(app, ["watch", "j1"])
    assert result.exit_code == code, result.output
    assert "raykd: [kd] epoch 1/2 loss 0.5000 val_acc 0.7500" in result.output
    assert f"job j1 (tiny): {final}" in result.output


def test_submit_validates_locally_then_prints_the_id(fake_cli: Any, tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=job_json("new-1", queue_position=2))

    fake_cli(handler)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(SPEC))
    result = CliRunner().invoke(app, ["submit", str(spec), "--set", "train.epochs=3",
                                      "--label", "team=kd", "--priority", "4"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "new-1"
    assert bodies[0]["spec"]["train"] == {"epochs": 3}
    assert bodies[0]["labels"] == {"team": "kd"} and bodies[0]["priority"] == 4
    bad = CliRunner().invoke(app, ["submit", str(spec), "--set", "train.epochs=0"])
    assert bad.exit_code == 2 and "train.epochs" in bad.output and len(bodies) == 1
    bad = CliRunner().invoke(app, ["submit", str(spec), "--label", "nolabel"])
    assert bad.exit_code == 2 and "--label 'nolabel'" in bad.output


def test_jobs_status_cancel_and_logs_commands(fake_cli: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/jobs":
            return httpx.Response(200, json={"items": [
                job_json("job-a", state="running", stage="students", progress=0.5),
                job_json("job-b", queue_position=1)], "next_cursor": None})
        if path.endswith("/logs"):
            return httpx.Response(200, text="hello\n")
        if path.endswith("/cancel"):
            return httpx.Response(200, json=job_json(state="cancelled", error="cancelled by admin"))
        return httpx.Response(200, json=job_json(
            state="succeeded", labels={"team": "kd"}, latest_metrics={"val_accuracy": 0.91},
            result={"dataset": {"name": "digits", "test": 10}, "teachers": [], "students": []}))

    fake_cli(handler)
    runner = CliRunner()
    listed = runner.invoke(app, ["jobs", "--state", "running"])
    assert listed.exit_code == 0 and "job-a" in listed.output and "50%" in listed.output
    shown = runner.invoke(app, ["status", "j1"])
    assert shown.exit_code == 0, shown.output
    assert "succeeded" in shown.output and "team=kd" in shown.output and "0.91" in shown.output
    as_json = runner.invoke(app, ["status", "j1", "--json"])
    assert json.loads(as_json.output)["state"] == "succeeded"
    cancelled = runner.invoke(app, ["cancel", "j1"])
    assert "cancelled: cancelled by admin" in cancelled.output
    assert runner.invoke(app, ["logs", "j1"]).output == "hello\n"


# --- import hygiene -----------------------------------------------------------------------------


def test_client_loads_neither_torch_nor_ray() -> None:
    assert_imports_none_of(["raykd.client", "raykd.bench.api"], ("torch", "ray"))
