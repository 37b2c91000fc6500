"""The lifecycle run_job and run_sweep share: the end event, the callbacks (each event, the
end), the lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raykd.core.errors import SpecError
from raykd.core.events import JobFailed, JobFinished, JsonlSink, Message, read_events
from raykd.core.spec import parse_spec
from raykd.engine import Lifecycle, LifecycleCallback
from raykd.engine.context import Job, open_job
from tests.helpers.specs import digits_spec


class _Result:
    """A result that writes itself (as JobResult and SweepResult do)."""

    def write(self, path: str | Path) -> Path:
        target = Path(path) / "result.json"
        target.write_text('{"ok": true}\n')
        return target


class _Seen(LifecycleCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_finished(self, job: Job, event: JobFinished) -> None:
        self.calls.append(("finished", event))

    def on_failed(self, job: Job, event: JobFailed, exc: BaseException) -> None:
        self.calls.append(("failed", (event, exc)))


def _job(tmp_path: Path) -> Job:
    spec = parse_spec(digits_spec(str(tmp_path / "runs")))
    return open_job(spec, job_dir=tmp_path / "job", log=lambda _: None)


def _last(tmp_path: Path) -> Any:
    return read_events(tmp_path / "job" / "events.jsonl")[-1]


def test_a_finished_job_writes_its_result_then_job_finished_and_frees_its_lock(
        tmp_path: Path) -> None:
    seen = _Seen()
    job = _job(tmp_path)
    result = Lifecycle(job, callbacks=[seen]).run(lambda life: life.write_result(_Result()))
    assert result == {"ok": True}
    last = _last(tmp_path)
    assert (last.type, last.result) == ("job_finished", str(tmp_path / "job" / "result.json"))
    assert [c for c, _ in seen.calls] == ["finished"]
    assert (seen.calls[0][1].result, seen.calls[0][1].seconds) == (last.result, last.seconds)
    assert job.lock is None
    _job(tmp_path).close()  # the next attempt may open it


@pytest.mark.parametrize(("exc", "kind", "message"), [
    (SpecError("train.epochs: must be > 0"), "user_error", "train.epochs: must be > 0"),
    (KeyboardInterrupt(), "cancelled",
     "stopped by a signal or Ctrl+C; run the same job id again to resume"),
    (ZeroDivisionError("division by zero"), "bug", "ZeroDivisionError: division by zero"),
])
def test_a_failed_stage_writes_job_failed_tells_the_callbacks_and_reraises(
        tmp_path: Path, exc: BaseException, kind: str, message: str) -> None:
    seen = _Seen()
    job = _job(tmp_path)

    def stages(life: Lifecycle) -> dict[str, Any]:
        raise exc

    with pytest.raises(type(exc)):
        Lifecycle(job, callbacks=[seen]).run(stages)
    last = _last(tmp_path)
    assert (last.type, last.kind, last.message) == ("job_failed", kind, message)
    event, raised = seen.calls[0][1]
    assert [c for c, _ in seen.calls] == ["failed"] and raised is exc
    assert (event.kind, event.message) == (kind, message)
    assert job.lock is None


def test_the_console_shows_the_end_event_before_it_closes(tmp_path: Path) -> None:
    """The console (the CLI's, the log a dashboard tails) sees job_finished while it is open;
    one that breaks on its way out raises after the job finished (its result is written)."""
    seen: list[str] = []

    @contextmanager
    def show(job: Job) -> Iterator[None]:
        yield
        seen.extend(e.type for e in read_events(job.job_dir / "events.jsonl"))
        raise SpecError("the console broke")

    with pytest.raises(SpecError):
        Lifecycle(_job(tmp_path), show=show).run(lambda life: life.write_result(_Result()))
    assert seen[-1] == "job_finished"
    types = [e.type for e in read_events(tmp_path / "job" / "events.jsonl")]
    assert types[-1] == "job_finished" and "job_failed" not in types


def test_stages_that_write_no_result_are_a_bug(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="without writing a result"):
        Lifecycle(_job(tmp_path)).run(lambda life: {})
    assert _last(tmp_path).kind == "bug"


class _Events(LifecycleCallback):
    """Records each event (type, seq) and the end, in the order the hooks were called."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_on = fail_on

    def on_event(self, job: Job, event: Any) -> None:
        if event.type == self.fail_on:
            raise ValueError(f"the callback broke on {event.type}")
        self.calls.append((event.type, event.seq))

    def on_finished(self, job: Job, event: JobFinished) -> None:
        self.calls.append(("finished", None))

    def on_failed(self, job: Job, event: JobFailed, exc: BaseException) -> None:
        self.calls.append(("failed", None))


def test_on_event_gets_every_event_of_the_attempt_whoever_wrote_it_and_the_end_first(
        tmp_path: Path) -> None:
    """Events a worker process writes (its own sink on the same file) reach the callbacks as
    the driver's do, in the file's order; the end event comes before on_finished."""
    seen = _Events()
    job = _job(tmp_path)
    worker = JsonlSink(job.layout.events, job.job_id)  # what a student worker holds

    def stages(life: Lifecycle) -> dict[str, Any]:
        with job.stage("students"):
            worker.emit(Message(text="epoch 1 from a worker"))
        return life.write_result(_Result())

    Lifecycle(job, callbacks=[seen]).run(stages)
    on_disk = [(e.type, e.seq) for e in read_events(tmp_path / "job" / "events.jsonl")]
    assert [t for t, _ in on_disk] == ["job_started", "stage_started", "message",
                                       "stage_finished", "job_finished"]
    assert seen.calls == [*on_disk, ("finished", None)]


def test_a_console_that_is_a_callback_shows_every_event_the_end_before_it_closes(
        tmp_path: Path) -> None:
    """The CLI's console: what ``show`` gives gets the attempt's events from the job's one
    tail (after the other callbacks), the end event while the console is still open."""
    seen, console = _Events(), _Events()
    log: list[str] = []

    @contextmanager
    def show(job: Job) -> Iterator[_Events]:
        log.append("entered")
        yield console
        log.append(f"closed after {console.calls[-1][0]}")

    Lifecycle(_job(tmp_path), show=show, callbacks=[seen]).run(
        lambda life: life.write_result(_Result()))
    on_disk = [(e.type, e.seq) for e in read_events(tmp_path / "job" / "events.jsonl")]
    assert console.calls == seen.calls == [*on_disk, ("finished", None)]
    assert log == ["entered", "closed after finished"]


def test_an_event_callbacks_error_is_noted_on_an_end_hooks_error_that_ends_the_run(
        tmp_path: Path) -> None:
    """Two callbacks break, one on an event and one in on_finished: run() raises the second
    (it ended the run) with the first noted on it, not lost."""

    class BreaksAtTheEnd(LifecycleCallback):
        def on_finished(self, job: Job, event: JobFinished) -> None:
            raise RuntimeError("on_finished broke")

    with pytest.raises(RuntimeError, match="on_finished broke") as raised:
        Lifecycle(_job(tmp_path), callbacks=[_Events(fail_on="job_started"), BreaksAtTheEnd()]).run(
            lambda life: life.write_result(_Result()))
    assert any("the callback broke on job_started" in note for note in raised.value.__notes__)
    assert _last(tmp_path).type == "job_finished"  # the job itself finished


def test_a_console_that_cannot_start_fails_the_job_and_the_others_still_get_its_events(
        tmp_path: Path) -> None:
    seen = _Events()

    @contextmanager
    def show(job: Job) -> Iterator[None]:
        raise SpecError("cannot open Ray's log")
        yield

    with pytest.raises(SpecError):
        Lifecycle(_job(tmp_path), show=show, callbacks=[seen]).run(
            lambda life: life.write_result(_Result()))
    assert [c for c, _ in seen.calls] == ["job_started", "job_failed", "failed"]


def test_on_event_starts_at_this_attempts_job_started(tmp_path: Path) -> None:
    first = _job(tmp_path)
    with pytest.raises(SpecError):
        Lifecycle(first).run(lambda life: (_ for _ in ()).throw(SpecError("first attempt")))
    seen = _Events()
    again = _job(tmp_path)  # the same id and spec: attempt 2
    Lifecycle(again, callbacks=[seen]).run(lambda life: life.write_result(_Result()))
    events = read_events(tmp_path / "job" / "events.jsonl")
    assert [e.type for e in events] == ["job_started", "job_failed", "job_started", "job_finished"]
    assert seen.calls == [("job_started", 3), ("job_finished", 4), ("finished", None)]


def test_a_callback_that_breaks_on_an_event_fails_the_run_after_the_job_ended(
        tmp_path: Path) -> None:
    """Its error is raised by run() (as a console that breaks is), once the job's end is
    written: the job's own events are whole, its lock is free."""
    broken, other = _Events(fail_on="stage_started"), _Events()
    job = _job(tmp_path)

    def stages(life: Lifecycle) -> dict[str, Any]:
        with job.stage("students"):
            pass
        return life.write_result(_Result())

    with pytest.raises(ValueError, match="broke on stage_started"):
        Lifecycle(job, callbacks=[broken, other]).run(stages)
    assert _last(tmp_path).type == "job_finished"
    assert broken.calls == [("job_started", 1), ("finished", None)]  # no event after its error
    assert [c for c, _ in other.calls] == ["job_started", "stage_started", "stage_finished",
                                           "job_finished", "finished"]  # the others get them all
    assert job.lock is None


def test_a_failed_job_hands_over_job_failed_before_on_failed_and_keeps_its_own_error(
        tmp_path: Path) -> None:
    broken, seen = _Events(fail_on="job_failed"), _Events()
    job = _job(tmp_path)

    def stages(life: Lifecycle) -> dict[str, Any]:
        raise SpecError("train.epochs: must be > 0")

    with pytest.raises(SpecError) as raised:
        Lifecycle(job, callbacks=[broken, seen]).run(stages)
    assert [c for c, _ in seen.calls] == ["job_started", "job_failed", "failed"]
    assert raised.value.__notes__ == [
        "a lifecycle callback failed too: ValueError('the callback broke on job_failed')"]
    assert job.lock is None


def test_a_callback_still_busy_after_the_end_gets_nothing_more_and_fails_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback that hangs cannot hold the job open: once the wait for it runs out, it is
    abandoned (no event after that, nothing after on_finished) and run() says so."""
    import threading

    from raykd.engine import lifecycle

    entered, release, calls = threading.Event(), threading.Event(), []

    class Stuck(LifecycleCallback):
        def on_event(self, job: Job, event: Any) -> None:
            calls.append(event.type)
            if event.type == "job_started":
                entered.set()
                release.wait(30)

    close = lifecycle.EventTail.close
    monkeypatch.setattr(lifecycle.EventTail, "close",
                        lambda self, timeout_s=60.0: close(self, timeout_s=0.3))
    job = _job(tmp_path)

    def stages(life: Lifecycle) -> dict[str, Any]:
        assert entered.wait(30), "the tail never handed over job_started"  # stuck from here on
        return life.write_result(_Result())

    with pytest.raises(TimeoutError, match="still busy"):
        Lifecycle(job, callbacks=[Stuck()]).run(stages)
    release.set()
    for thread in threading.enumerate():  # released: would it hand over the rest now?
        if thread.name == "raykd-event-tail":
            thread.join(10)
    assert _last(tmp_path).type == "job_finished" and job.lock is None
    assert calls == ["job_started"]  # abandoned: the rest never reached it
