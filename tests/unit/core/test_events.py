"""Tests for raykd.core.events (the sink, readers) and raykd.core.results (status, result.json)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from raykd.core.events import (
    Epoch,
    JobFailed,
    JobFinished,
    JobStarted,
    JsonlSink,
    Message,
    StageFinished,
    StageStarted,
    StudentFinished,
    TeacherReady,
    follow,
    parse_event,
    read_events,
)
from raykd.core.jobdir import spec_hash
from raykd.core.results import JobResult, SweepResult
from raykd.core.spec import MODEL_NAMES, parse_spec
from raykd.core.status import DIED_MESSAGE, JobStatus, job_status
from tests.helpers.imports import assert_imports_none_of
from tests.helpers.specs import digits_spec

# --- the sink --------------------------------------------------------------------------


def _write_many(path: str, writer: int, n: int, start: Any) -> None:
    """Child process: wait for the common start, then emit ``n`` messages."""
    start.wait()
    sink = JsonlSink(path, "job-1")
    for i in range(n):
        sink.emit(Message(text=f"{writer}:{i}"))


def test_concurrent_writers_number_events_without_gap_or_repeat(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writers, per_writer = 4, 50
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_write_many, args=(str(path), w, per_writer, start))
             for w in range(writers)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole, valid JSON
    assert [r["seq"] for r in rows] == list(range(1, writers * per_writer + 1))
    assert sorted(r["text"] for r in rows) == sorted(
        f"{w}:{i}" for w in range(writers) for i in range(per_writer)
    )
    for w in range(writers):  # each writer's own events keep their order
        mine = [int(r["text"].split(":")[1]) for r in rows if r["text"].startswith(f"{w}:")]
        assert mine == list(range(per_writer))
    assert {r["job_id"] for r in rows} == {"job-1"}
    assert [e.seq for e in read_events(path)] == [r["seq"] for r in rows]
    assert [e.seq for e in read_events(path, after=150)] == list(range(151, 201))


def test_emit_returns_the_event_as_written(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", "job-7")
    first = sink.emit(StageStarted(stage="data"))
    second = sink.emit(StageFinished(stage="data", seconds=0.5))
    assert (first.seq, second.seq, first.job_id) == (1, 2, "job-7")
    assert read_events(sink.path) == [first, second]
    assert parse_event(first.model_dump()) == first


def test_follow_sees_only_whole_events_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    n = 120
    done = threading.Event()

    def writer() -> None:
        sink = JsonlSink(path, "job-1")
        for i in range(n):
            sink.emit(Message(text=f"{i}:" + "x" * (i * 500)))  # up to ~60 KB a line
            if i % 10 == 0:
                time.sleep(0.005)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = list(follow(path, poll_s=0.001, stop=done.is_set))
    thread.join()
    assert [e.seq for e in seen] == list(range(1, n + 1))
    assert [e.text for e in seen] == [f"{i}:" + "x" * (i * 500) for i in range(n)]


def test_follow_stops_at_the_final_event(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", "job-1")
    sink.emit(StageStarted(stage="data"))
    sink.emit(JobFinished(result="result.json", seconds=1.0))
    sink.emit(Message(text="after the end"))
    assert [e.type for e in follow(sink.path, poll_s=0.001)] == ["stage_started", "job_finished"]
    assert [e.seq for e in follow(sink.path, after=1, poll_s=0.001)] == [2]


def test_follow_told_to_stop_ends_at_the_final_event_too(tmp_path: Path) -> None:
    """The end and a straggler's event after it land before the stop is seen: the read after
    it hands over the end, not what came after it."""
    sink = JsonlSink(tmp_path / "events.jsonl", "job-1")
    sink.emit(StageStarted(stage="students"))

    def stop() -> bool:  # asked before each read
        sink.emit(JobFailed(kind="cancelled", message="stopped"))
        sink.emit(Epoch(student=0, epoch=2, epochs=3))
        return True

    assert [e.type for e in follow(sink.path, poll_s=0.001, stop=stop)] == [
        "stage_started", "job_failed"]


def test_follow_reads_and_parses_each_line_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A long job's tail costs what is new at each poll, not the whole file again; a line
    still being written is read once it is whole."""
    import raykd.core.events as events

    parsed: list[int] = []

    def counted(line: bytes) -> Any:
        event = parse_event(line)
        parsed.append(event.seq)
        return event

    monkeypatch.setattr(events, "parse_event", counted)
    sink = JsonlSink(tmp_path / "events.jsonl", "job-1")
    sink.emit(StageStarted(stage="data"))  # seq 1, before ``after``: read once, not yielded
    polls = iter(range(50))
    end = JobFinished(seq=42, job_id="job-1", result="r.json", seconds=1.0).model_dump_json()

    def stop() -> bool:  # one more event per poll, the last half a line at first
        i = next(polls)
        if i < 40:
            sink.emit(Epoch(student=0, epoch=i + 1, epochs=40))
        elif i in (40, 41):  # the end event in two writes
            with open(sink.path, "ab") as f:
                f.write(end.encode()[:30] if i == 40 else end.encode()[30:] + b"\n")
        return False

    seen = [e.seq for e in follow(sink.path, after=1, poll_s=0, stop=stop)]
    assert seen == list(range(2, 43))
    assert parsed == list(range(1, 43))  # each line once


def test_a_partial_last_line_is_not_an_event_until_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, "job-1")
    sink.emit(StageStarted(stage="data"))
    line = Message(seq=2, job_id="job-1", text="half").model_dump_json().encode() + b"\n"
    with open(path, "ab") as f:
        f.write(line[:20])
    assert [e.seq for e in read_events(path)] == [1]
    with open(path, "ab") as f:
        f.write(line[20:])
    assert [e.seq for e in read_events(path)] == [1, 2]


def test_the_sink_continues_after_a_torn_line(tmp_path: Path) -> None:
    """A writer killed mid-line must not stop the next run of the job from writing events."""
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, "job-1")
    sink.emit(StageStarted(stage="data"))
    with open(path, "ab") as f:
        f.write(Message(seq=2, text="torn").model_dump_json().encode()[:25])
    written = sink.emit(Message(text="next run"))
    assert written.seq == 2
    assert [(e.seq, e.type) for e in read_events(path)] == [(1, "stage_started"), (2, "message")]


def test_the_sink_numbers_after_a_line_longer_than_its_tail_read(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", "job-1")
    sink.emit(JobFailed(kind="bug", message="boom", traceback="frame\n" * 40_000))  # ~240 KB
    assert sink.emit(Message(text="again")).seq == 2
    assert [e.seq for e in read_events(sink.path)] == [1, 2]


# --- job_status ------------------------------------------------------------------------


def _events(*items: Any) -> list[Any]:
    """Events numbered from 1 with one second between them, as a sink would write them."""
    return [e.model_copy(update={"seq": i, "job_id": "job-1", "time": 1000.0 + i})
            for i, e in enumerate(items, start=1)]


def _started(attempt: int = 1) -> JobStarted:
    return JobStarted(name="digits", spec_hash="0123456789abcdef", attempt=attempt,
                      total_epochs=6, students=2)


def _epoch(student: int, epoch: int, loss: float = 1.0) -> Epoch:
    return Epoch(student=student, epoch=epoch, epochs=3, label="kd",
                 metrics={"train_loss": loss, "val_accuracy": 0.5 + epoch / 10})


def _running() -> list[Any]:
    """Teachers done, student 0 finished (3 epochs), student 1 after its first epoch."""
    return [
        _started(),
        StageStarted(stage="data"), StageFinished(stage="data", seconds=0.1),
        StageStarted(stage="teachers"),
        TeacherReady(index=0, trained=True, checkpoint="t0.safetensors", test_accuracy=0.9),
        StageFinished(stage="teachers", seconds=3.0),
        StageStarted(stage="students"),
        _epoch(0, 1), _epoch(0, 2), _epoch(0, 3),
        StudentFinished(student=0, checkpoint="s0.safetensors", val_accuracy=0.8),
        _epoch(1, 1, loss=0.25),
    ]


def test_no_events_is_pending() -> None:
    status = job_status([], job_id="job-9")
    assert status == JobStatus(job_id="job-9", state="pending")
    assert status.progress == 0.0 and status.last_seq == 0


def test_a_running_job() -> None:
    events = _events(*_running())
    status = job_status(events)
    assert status.job_id == "job-1"
    assert status.state == "running"
    assert status.stage == "students"
    assert status.progress == pytest.approx(4 / 6)
    assert status.latest_metrics == {"train_loss": 0.25, "val_accuracy": 0.6}
    assert (status.student, status.generation, status.epoch, status.epochs) == (1, 1, 1, 3)
    assert status.attempt == 1
    assert status.started_at == 1001.0 and status.finished_at is None
    assert status.error is None
    assert status.last_seq == len(events)
    assert job_status(events, process_alive=True) == status


def test_the_stage_is_the_innermost_open_one() -> None:
    events = _events(_started(), StageStarted(stage="students"),
                     StageStarted(stage="born_again_teacher"))
    assert job_status(events).stage == "born_again_teacher"
    events = _events(_started(), StageStarted(stage="students"),
                     StageStarted(stage="born_again_teacher"),
                     StageFinished(stage="born_again_teacher", seconds=1.0))
    assert job_status(events).stage == "students"
    assert job_status(_events(_started())).stage is None


def test_a_finished_job() -> None:
    events = _events(*_running(), _epoch(1, 2), _epoch(1, 3),
                     StudentFinished(student=1, checkpoint="s1.safetensors"),
                     StageFinished(stage="students", seconds=9.0),
                     JobFinished(result="result.json", seconds=12.0))
    status = job_status(events, process_alive=False)  # a finished driver is gone: no matter
    assert status.state == "succeeded"
    assert status.progress == 1.0
    assert status.stage is None
    assert status.finished_at == events[-1].time
    assert status.error is None


def test_a_failed_job_reports_the_user_error() -> None:
    message = "data.dataset: no such file 'missing.csv'"
    events = _events(_started(), StageStarted(stage="data"),
                     JobFailed(kind="user_error", message=message))
    status = job_status(events)
    assert status.state == "failed"
    assert status.error == message
    assert status.stage == "data"  # where it stopped
    assert status.finished_at == events[-1].time
    assert status.progress == 0.0


def test_a_bug_is_a_failure_too() -> None:
    events = _events(_started(), JobFailed(kind="bug", message="KeyError: 'x'", traceback="..."))
    assert job_status(events).state == "failed"


def test_a_cancelled_job() -> None:
    events = _events(*_running(), JobFailed(kind="cancelled", message="stopped by the user"))
    status = job_status(events)
    assert status.state == "cancelled"
    assert status.error == "stopped by the user"
    assert status.progress == pytest.approx(4 / 6)


def test_a_job_whose_driver_died() -> None:
    events = _events(*_running())
    status = job_status(events, process_alive=False)
    assert status.state == "failed"
    assert status.error == DIED_MESSAGE
    assert "resume" in status.error
    assert status.stage == "students"
    assert status.progress == pytest.approx(4 / 6)


def test_a_resumed_job_is_running_and_keeps_its_progress() -> None:
    attempt_1 = [*_running(), JobFailed(kind="bug", message="worker lost")]
    attempt_2 = [_started(attempt=2), StageStarted(stage="data")]
    status = job_status(_events(*attempt_1, *attempt_2))
    assert status.state == "running"
    assert status.attempt == 2
    assert status.error is None and status.finished_at is None
    assert status.stage == "data"  # attempt 1's open "students" stage is not carried over
    assert status.progress == pytest.approx(4 / 6)
    assert status.latest_metrics == {"train_loss": 0.25, "val_accuracy": 0.6}
    assert status.started_at == 1001.0  # the job's first start

    later = [*attempt_2, StageStarted(stage="students"),
             StudentFinished(student=0, checkpoint="s0.safetensors", reused=True),
             _epoch(1, 1), _epoch(1, 2)]  # epoch 1 again after a resume: counted once
    status = job_status(_events(*attempt_1, *later))
    assert status.progress == pytest.approx(5 / 6)
    assert (status.student, status.epoch) == (1, 2)


def test_a_reused_student_counts_its_epochs_without_epoch_events() -> None:
    events = _events(_started(attempt=2),
                     StudentFinished(student=0, checkpoint="s0.safetensors", reused=True))
    assert job_status(events).progress == pytest.approx(3 / 6)


def test_the_second_attempt_failing_again_is_failed() -> None:
    events = _events(_started(), JobFailed(kind="bug", message="first"),
                     _started(attempt=2), JobFailed(kind="user_error", message="second"))
    status = job_status(events)
    assert (status.state, status.error, status.attempt) == ("failed", "second", 2)


def test_status_of_events_read_back_from_a_file(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", "job-5")
    for event in _running():
        sink.emit(event)
    status = job_status(read_events(sink.path))
    assert status.job_id == "job-5"
    assert status.last_seq == len(_running())
    assert job_status(read_events(sink.path), job_id="other").job_id == "other"


# --- spec_hash and result.json ---------------------------------------------------------


def test_spec_hash_is_canonical() -> None:
    a = {"name": "x", "train": {"epochs": 3, "lr": 0.001}}
    b = {"train": {"lr": 0.001, "epochs": 3}, "name": "x"}
    assert spec_hash(a) == spec_hash(b)
    assert len(spec_hash(a)) == 16 and int(spec_hash(a), 16) >= 0
    assert spec_hash(a) != spec_hash({**a, "name": "y"})


def _generation(generation: int, seed: int) -> dict[str, Any]:
    return {
        "generation": generation, "method": "kd", "seed": seed,
        "checkpoint": f"/runs/digits-1/students/student-0-g{generation}.safetensors",
        "val_accuracy": 0.93, "test_accuracy": 0.925, "seconds": 7.5, "best_epoch": 3,
        "history": [
            {"epoch": e, "train_loss": 1.0 / e, "epoch_seconds": 0.4, "samples_per_s": 3000.0,
             "val_accuracy": 0.8 + e / 100}
            for e in (1, 2, 3)
        ],
    }


def _result_dict(tmp_path: Path) -> dict[str, Any]:
    """A result.json as the engine writes it: two teachers, a born-again kd and a wkd."""
    spec = parse_spec(digits_spec(str(tmp_path)))
    spec_json = json.loads(spec.model_dump_json())
    teacher = {"index": 0, "model": {"name": "mlp", "hidden": [32], "width": 16, "dropout": 0.0,
                                     "num_classes": None, "path": None, "kwargs": {}},
               "checkpoint": "/runs/digits-1/teachers/teacher-0.safetensors",
               "trained_by_raykd": True, "train_seconds": 2.5, "val_accuracy": 0.95,
               "test_accuracy": 0.94}
    stats = {"cache_hits": 0, "teacher_forward_examples": 1000, "seconds": 0.2,
             "cache_keys": ["k0", "k1"]}
    return {
        "job_id": "digits-1", "spec_hash": spec_hash(spec_json), "attempts": 2,
        "versions": {"raykd": "0.1.0", "python": "3.12.3", "torch": "2.5.1", "ray": "2.50.0"},
        "job": "test-digits", "job_dir": "/runs/digits-1",
        "dataset": {"name": "digits", "train": 1149, "val": 128, "test": 360, "num_classes": 10,
                    "fingerprints": {"train": "aa", "val": "bb", "test": "cc"},
                    "class_names": None, "table": None},
        "spec": spec_json,
        "timings": {"data": 0.1, "ray_init": 2.0, "teachers": 5.0, "students": 20.0, "total": 27.5},
        "teachers": [teacher, {**teacher, "index": 1, "checkpoint": "/ckpt/t1.safetensors",
                               "trained_by_raykd": False, "train_seconds": 0.0}],
        "ensemble": {"val_accuracy": 0.96, "test_accuracy": 0.95},
        "teacher_placement": [{"index": 0, "pid": 123, "device": "cpu", "gpu_ids": [],
                               "cuda_visible_devices": None, "threads": 1, "torch_threads": 1,
                               "forward_passes": 4, "forward_examples": 1637}],
        "logit_cache": {"teacher": {s: stats for s in ("train", "val", "test")},
                        "kd x2 gen generation 1": {"train": {**stats, "extra_note": "kept"}}},
        "students": [
            {"label": "kd x2 gen", "method": "kd", "temperature": 4.0, "alpha": 0.9,
             "incorrect_weight": 0.75, "generations": [_generation(1, 0), _generation(2, 991)],
             "val_accuracy": 0.93, "test_accuracy": 0.925, "ban_test_accuracy": 0.93},
            {"label": "wkd W=0.75", "method": "wkd", "temperature": 4.0, "alpha": 0.9,
             "incorrect_weight": 0.75, "generations": [_generation(1, 0)],
             "val_accuracy": 0.94, "test_accuracy": 0.93},
        ],
        "diagnostics": {"note": "the engine may add more"},
    }


def test_job_result_round_trip(tmp_path: Path) -> None:
    data = _result_dict(tmp_path)
    result = JobResult.model_validate(data)
    assert result.students[0].generations[1].history[2].epoch == 3
    assert result.students[1].ban_test_accuracy is None
    assert result.teachers[0].model.hidden == (32,)
    assert result.logit_cache["teacher"]["val"].teacher_forward_examples == 1000

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    path = result.write(job_dir / "result.json")
    assert JobResult.load(path) == result
    assert JobResult.load(job_dir) == result  # a job directory means its result.json
    assert sorted(p.name for p in job_dir.iterdir()) == ["result.json"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as a cache is (not 0600)

    written = json.loads(path.read_text())
    assert written["diagnostics"] == data["diagnostics"]
    assert written["teacher_placement"] == data["teacher_placement"]
    assert written["logit_cache"]["kd x2 gen generation 1"]["train"]["extra_note"] == "kept"
    assert_kept(written["students"][0]["generations"][0]["history"],
                data["students"][0]["generations"][0]["history"], "history")
    assert written["spec"] == data["spec"]

    again = result.model_copy(update={"attempts": 3})
    again.write(path)  # replaces the file whole
    assert JobResult.load(path).attempts == 3


def test_job_result_loads_a_file_written_by_json_dumps(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_result_dict(tmp_path), indent=2))
    assert JobResult.load(path).job_id == "digits-1"


def test_job_result_rejects_a_wrong_shape(tmp_path: Path) -> None:
    data = _result_dict(tmp_path)
    del data["students"]
    with pytest.raises(ValidationError, match="students"):
        JobResult.model_validate(data)
    data = _result_dict(tmp_path)
    data["students"][0]["generations"][0]["history"][0]["epoch"] = 0
    with pytest.raises(ValidationError, match="epoch"):
        JobResult.model_validate(data)


@pytest.mark.parametrize("model", [JobResult, SweepResult, JobStatus])
def test_result_fields_are_described(model: type[BaseModel]) -> None:
    """Every field of the file, and of every row model it nests, has a description."""
    schema = model.model_json_schema()
    for name, part in [(model.__name__, schema), *schema.get("$defs", {}).items()]:
        props = part.get("properties", {})
        assert all("description" in p for p in props.values()), name


# --- sweep.json ------------------------------------------------------------------------


def _trial(trial_id: str, w: float, t: float, acc: float | None) -> dict[str, Any]:
    return {"trial_id": trial_id, "method": "wkd", "incorrect_weight": w, "temperature": t,
            "alpha": 0.9, "val_accuracy": acc, "best_val_accuracy": acc, "epochs": 2,
            "train_loss": 0.5, "trial_seconds": 3.2, "teacher_forward_examples": 0,
            "teacher_seconds": 0.0, "status": "done"}


def _sweep_dict(tmp_path: Path) -> dict[str, Any]:
    """A sweep.json as the sweep writes it: shared logits, 2 trials, the best retrained."""
    run = _result_dict(tmp_path)
    spec_json = {**run["spec"], "sweep": {"searcher": "grid", "incorrect_weight": {"values": [0.5, 1.0]}}}
    spec = parse_spec(spec_json)
    spec_json = json.loads(spec.model_dump_json())
    base = spec.methods[0].model_dump(mode="json")
    best = _trial("a_00001", 1.0, 4.0, 0.95)
    return {
        **{k: run[k] for k in ("versions", "job", "dataset", "teachers", "ensemble", "logit_cache")},
        "job_id": "digits-sweep-1", "spec_hash": spec_hash(spec_json), "attempts": 1,
        "job_dir": "/runs/digits-sweep-1", "spec": spec_json,
        "timings": {"data": 0.1, "ray_init": 2.0, "teachers": 5.0, "tune": 30.0, "final": 4.0,
                    "total": 41.5},
        "mode": "shared", "resumed": False, "sweep": spec_json["sweep"], "base_method": base,
        "resources": {"trial_cpus": 1.0, "trial_gpus": 0.0, "worker_cpus": 0.0, "worker_gpus": 0.0,
                      "concurrency": 2, "threads": 1, "nested": False, "cpus_per_trial": 1.0},
        "trials": [_trial("a_00000", 0.5, 4.0, None) | {"status": "error: ValueError: x",
                                                        "epochs": 0, "trial_seconds": None},
                   {**best, "extra_metric": 1.5}],
        "best": best,
        "final": {"checkpoint": "/runs/digits-sweep-1/best_student.safetensors",
                  "test_accuracy": 0.94, "method": {**base, "incorrect_weight": 1.0},
                  "trained_on": {"train": 1149, "val": 128},
                  "history": _generation(1, 0)["history"], "seconds": 4.0,
                  "note": "history's val_accuracy is on val, which is part of the training data here"},
        "files": {"trials": "/runs/digits-sweep-1/trials.csv",
                  "heatmap": "/runs/digits-sweep-1/heatmap_w_t.png",
                  "alpha": "/runs/digits-sweep-1/alpha.png"},
    }


def test_sweep_result_round_trip(tmp_path: Path) -> None:
    data = _sweep_dict(tmp_path)
    result = SweepResult.model_validate(data)
    assert result.trials[0].val_accuracy is None and result.best.trial_id == "a_00001"
    assert result.final is not None and result.final.method.incorrect_weight == 1.0
    assert result.sweep.incorrect_weight is not None and result.resources.concurrency == 2

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    path = result.write(job_dir)  # a job directory means its sweep.json
    assert path == job_dir / "sweep.json"
    assert sorted(p.name for p in job_dir.iterdir()) == ["sweep.json"]  # no temp file left
    assert SweepResult.load(job_dir) == SweepResult.load(path) == result

    written = json.loads(path.read_text())
    assert set(data) <= set(written)  # every key sweep.json had, under the same name
    for key in ("trials", "best", "final", "files", "timings", "teachers", "ensemble", "dataset"):
        assert_kept(written[key], data[key], key)  # the readers' keys, as they were
    assert written["trials"][1]["extra_metric"] == 1.5  # a row may carry more


def assert_kept(written: Any, given: Any, where: str) -> None:
    """Every key ``given`` had is in ``written`` with its value (a newer writer may add optional
    fields, such as a text job's macro-F1 or an hf model's settings, at their defaults)."""
    if isinstance(given, dict):
        assert isinstance(written, dict), where
        for k, v in given.items():
            assert k in written, f"{where}.{k}"
            assert_kept(written[k], v, f"{where}.{k}")
    elif isinstance(given, list):
        assert isinstance(written, list) and len(written) == len(given), where
        for i, (w, g) in enumerate(zip(written, given, strict=True)):
            assert_kept(w, g, f"{where}[{i}]")
    else:
        assert written == given, where


def test_sweep_result_of_a_naive_sweep(tmp_path: Path) -> None:
    """No teacher stage, no retraining: no teachers, ensemble or cache statistics."""
    data = _sweep_dict(tmp_path)
    for key in ("teachers", "ensemble", "logit_cache"):
        del data[key]
    result = SweepResult.model_validate({**data, "mode": "naive", "final": None})
    assert result.teachers == [] and result.ensemble is None and result.logit_cache == {}
    assert result.final is None


def test_sweep_result_rejects_a_wrong_shape(tmp_path: Path) -> None:
    data = _sweep_dict(tmp_path)
    del data["trials"]
    with pytest.raises(ValidationError, match="trials"):
        SweepResult.model_validate(data)
    data = _sweep_dict(tmp_path)
    data["best"]["epochs"] = -1
    with pytest.raises(ValidationError, match="epochs"):
        SweepResult.model_validate(data)
    with pytest.raises(ValidationError, match="mode"):
        SweepResult.model_validate({**_sweep_dict(tmp_path), "mode": "both"})
    with pytest.raises(ValidationError, match="final"):  # absent is not None: say which
        SweepResult.model_validate({k: v for k, v in _sweep_dict(tmp_path).items() if k != "final"})


# --- torch-free spec and import hygiene --------------------------------------------------


def test_model_names_match_the_registry() -> None:
    from raykd.models import MODELS

    assert set(MODELS) == set(MODEL_NAMES)
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES))


def test_light_modules_load_neither_torch_nor_ray() -> None:
    assert_imports_none_of(["raykd.core.spec", "raykd.core.events", "raykd.core.results",
                            "raykd.core.errors", "raykd.core.states", "raykd.core.jobdir"],
                           ("torch", "ray"))



def test_a_trial_line_names_the_sweeps_metric() -> None:
    """A span sweep's trial reports SQuAD val F1 (its ranking metric): the line shows that."""
    from raykd.console_text import event_line
    from raykd.core.events import Trial

    span = Trial(trial_id="t1", config={}, metrics={"val_accuracy": 0.9, "val_f1": 41.5})
    assert event_line(span) == "trial t1: val_f1 41.5000"
    plain = Trial(trial_id="t2", config={}, metrics={"val_accuracy": 0.9})
    assert event_line(plain) == "trial t2: val_accuracy 0.9000"
