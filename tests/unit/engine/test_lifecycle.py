"""The lifecycle run_job and run_sweep share: the end event, the callbacks, the lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raykd.core.errors import SpecError
from raykd.core.events import JobFailed, JobFinished, read_events
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
