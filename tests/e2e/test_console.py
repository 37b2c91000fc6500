"""The console of ``raykd run``: raykd's own lines on the terminal, Ray's in the job's ray.log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from raykd.core.events import read_events
from tests.helpers.paths import ROOT
from tests.helpers.specs import digits_spec

RAYKD = Path(sys.executable).parent / "raykd"
NOISE = {  # what Ray itself prints, and must not reach raykd's console
    "colour codes": re.compile(r"\x1b\["),
    "actor prefixes": re.compile(r"pid="),
    "core worker log": re.compile(r"core_worker\.cc"),
    "token-auth warning": re.compile(r"Token authentication"),
    "dedup notice": re.compile(r"deduplicates logs|RAY_DEDUP_LOGS"),
}


def _env(tmp_path: Path) -> dict[str, str]:
    """The user's default: Ray's auth mode unset (so Ray warns that it turned token auth on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    return env | {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "COLUMNS": "100"}


def _noise(text: str) -> list[str]:
    return [name for name, pattern in NOISE.items() if pattern.search(text)]


@pytest.mark.slow
def test_run_shows_raykd_lines_and_puts_rays_in_the_job_log(tmp_path: Path) -> None:
    spec = digits_spec(str(tmp_path / "runs"), teacher_train={"epochs": 2, "batch_size": 64,
                                                               "lr": 0.003},
                       train={"epochs": 1, "batch_size": 64, "lr": 0.003})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    job_dir = tmp_path / "job"
    proc = subprocess.run([str(RAYKD), "run", "spec.yaml", "--job-dir", str(job_dir)],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    assert _noise(console) == [], console
    for line in ("raykd: stage ray_init done", "raykd: teacher 0: trained in",
                 "raykd: [kd] epoch 1/1 loss", "student: kd", "result: "):
        assert line in proc.stdout, f"{line!r} missing from:\n{proc.stdout}"
    ray_log = job_dir / "ray.log"
    assert f"raykd: Ray's own output (workers, warnings): {ray_log}" in proc.stdout
    log = ray_log.read_text()
    assert "(TeacherServer pid=" in log and "teacher 0: epoch 2/2 loss" in log, log[-3000:]
    # Ray's own lines (its token-auth warning today) are Ray's to change: not asserted here
    assert "\x1b[" not in log, "Ray's prefixes in ray.log carry colour codes"


@pytest.mark.slow
def test_a_terminal_that_goes_away_does_not_fail_the_job(tmp_path: Path) -> None:
    """``raykd run spec.yaml | head -c 1``: the pipe is closed before the first line is whole;
    the job runs to its end all the same (its events say finished), saying on stderr where
    its events are."""
    spec = digits_spec(str(tmp_path / "runs"), train={"epochs": 1, "batch_size": 64, "lr": 0.003})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    job_dir = tmp_path / "job"
    proc = subprocess.Popen([str(RAYKD), "run", "spec.yaml", "--job-dir", str(job_dir)],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()  # as head does once it has what it wanted
    err = proc.stderr.read()
    proc.wait(timeout=600)
    types = [e.type for e in read_events(job_dir / "events.jsonl")]
    assert types[-1] == "job_finished" and "job_failed" not in types, (types, err[-3000:])
    assert "Traceback" not in err, err[-3000:]


def _python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by this Python with raykd importable; stdout and stderr are pipes, so
    descriptors 1 and 2 are real and divertible."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_errors_reach_the_console_and_name_rays_log(tmp_path: Path) -> None:
    """With Ray's output diverted, a failing command still prints its one-line error (and
    where Ray's lines are); what Ray writes to stdout, stderr or the raw descriptors does not."""
    proc = _python(f"""
        import os, sys
        from raykd.cli.common import echo_log, guarded
        from raykd.console import divert_ray_output
        from raykd.core.spec import SpecError

        def fail():
            with divert_ray_output({str(tmp_path / 'ray.log')!r}) as diverted:
                assert diverted.diverted
                echo_log("stage data done")
                print("(TeacherServer pid=1) from a worker")
                print("a Ray warning", file=sys.stderr)
                os.write(2, b"core_worker.cc:1: from C++\\n")
                raise SpecError("teachers: at least one is required")

        try:
            guarded(fail)
        except Exception as exit:  # typer.Exit, as the command line ends
            sys.exit(exit.exit_code)
    """)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "raykd: stage data done\n"
    assert proc.stderr.splitlines() == ["error: teachers: at least one is required",
                                        f"Ray's own output: {tmp_path / 'ray.log'}"]
    log = (tmp_path / "ray.log").read_text()
    for line in ("(TeacherServer pid=1) from a worker", "a Ray warning", "core_worker.cc:1"):
        assert line in log


def test_ctrl_c_prints_one_cancelled_line_naming_rays_log(tmp_path: Path) -> None:
    """An interrupt ends the command with exit code 130 and one line on the terminal (no
    click "Aborted!" lost in Ray's log)."""
    proc = _python(f"""
        import sys
        from raykd.cli.common import guarded
        from raykd.console import divert_ray_output

        def interrupted():
            with divert_ray_output({str(tmp_path / 'ray.log')!r}):
                raise KeyboardInterrupt

        try:
            guarded(interrupted)
        except Exception as exit:
            sys.exit(exit.exit_code)
    """)
    assert (proc.returncode, proc.stdout) == (130, ""), proc.stderr
    assert proc.stderr == f"cancelled; Ray's own output: {tmp_path / 'ray.log'}\n"


def test_two_jobs_in_one_process_each_get_their_own_ray_log(tmp_path: Path) -> None:
    """The descriptors are diverted per job and put back after it: each log holds only its
    job's lines, the terminal everything said outside a job, and no descriptor is left open."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    proc = _python("""
        import os, sys
        from raykd import console

        def fds():
            return sorted(os.listdir("/proc/self/fd"))

        before = fds()
        os.write(1, b"terminal before\\n")
        for job in sys.argv[1:]:
            with console.divert_ray_output(f"{job}/ray.log"):
                os.write(1, f"ray of {job}\\n".encode())
                os.write(2, f"ray error of {job}\\n".encode())
                print(f"print of {job}")
                console.out().write(f"raykd line of {job}\\n")
                console.err().write(f"raykd error of {job}\\n")
            os.write(1, f"terminal after {job}\\n".encode())
            print(f"print after {job}", flush=True)
        assert console.ray_log() == console.Path(sys.argv[-1], "ray.log")
        assert fds() == before, (before, fds())
    """, str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "terminal before", f"raykd line of {a}", f"terminal after {a}", f"print after {a}",
        f"raykd line of {b}", f"terminal after {b}", f"print after {b}"]
    assert proc.stderr.splitlines() == [f"raykd error of {a}", f"raykd error of {b}"]
    for job in (a, b):
        assert sorted((job / "ray.log").read_text().splitlines()) == sorted(
            [f"ray of {job}", f"ray error of {job}", f"print of {job}"])
        assert (job / "ray.log").stat().st_mode & 0o777 == 0o600


def test_a_ray_log_that_is_a_link_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    """A ``ray.log`` planted as a symbolic link is never written through: one error naming
    the file, the link's target untouched, descriptors 1 and 2 still the terminal."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    (tmp_path / "ray.log").symlink_to(target)
    proc = _python(f"""
        import os
        from raykd.console import divert_ray_output
        from raykd.core.errors import JobDirError

        before = sorted(os.listdir("/proc/self/fd"))
        try:
            with divert_ray_output({str(tmp_path / 'ray.log')!r}):
                os.write(1, b"diverted\\n")
        except JobDirError as exc:
            print(exc)
        assert sorted(os.listdir("/proc/self/fd")) == before
        os.write(1, b"terminal\\n")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"cannot open Ray's log {tmp_path / 'ray.log'} (it is a symbolic link); accepted: a "
        "regular file the job's owner can write, or none", "terminal"]
    assert target.read_text() == "keep\n"


def test_thread_errors_and_fatal_errors_reach_the_terminal_not_rays_log(tmp_path: Path) -> None:
    """While diverted, a thread's uncaught exception and a fatal error's traceback go to the
    console's stderr; after the job, the thread hook is the one from before."""
    proc = _python(f"""
        import faulthandler, os, threading
        from raykd.console import divert_ray_output

        hook, fatal = threading.excepthook, faulthandler.is_enabled()  # PYTHONFAULTHANDLER
        with divert_ray_output({str(tmp_path / 'ray.log')!r}):
            def boom():
                raise RuntimeError("follower thread died")
            thread = threading.Thread(target=boom, name="follower")
            thread.start()
            thread.join()
        assert threading.excepthook is hook and faulthandler.is_enabled() == fatal
        with divert_ray_output({str(tmp_path / 'ray.log')!r}):
            faulthandler._sigsegv()
    """)
    assert proc.returncode != 0
    assert "Exception in thread follower:" in proc.stderr
    assert "RuntimeError: follower thread died" in proc.stderr
    assert "Fatal Python error: Segmentation fault" in proc.stderr, proc.stderr
    log = (tmp_path / "ray.log").read_text()
    assert "follower thread died" not in log and "Fatal Python error" not in log


def test_a_terminal_gets_a_progress_bar_and_plain_output_gets_lines() -> None:
    """On a terminal the bar counts the students' epochs; elsewhere the lines are plain."""
    import io
    from types import SimpleNamespace as Event

    from raykd.console import Display

    plain = io.StringIO()
    with Display(plain) as display:
        display.event(Event(type="job_started", total_epochs=2))
        display.line("stage data done in 1.0 s")
    assert plain.getvalue() == "raykd: stage data done in 1.0 s\n"

    term, streams = io.StringIO(), (sys.stdout, sys.stderr)
    with Display(term, bar=True) as display:
        assert (sys.stdout, sys.stderr) == streams, "the bar took over stdout: Ray's lines with it"
        display.event(Event(type="job_started", total_epochs=2))
        display.event(Event(type="stage_started", stage="students"))
        display.event(Event(type="epoch", label="kd", student=0))
        task = display.progress.tasks[0]
        assert (task.completed, task.total, task.description) == (1, 2, "student kd")
        display.line("[kd] epoch 1/2")
    assert "raykd: [kd] epoch 1/2" in term.getvalue()


def test_the_console_callback_shows_each_event_and_a_broken_terminal_never_fails_the_job(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``raykd run``'s console gets the job's events from the lifecycle: a line per event; a
    terminal that went away (``raykd run ... | head``) ends the showing, not the job."""
    import io

    from raykd.cli.job_console import ConsoleEvents
    from raykd.console import Display
    from raykd.core.events import Epoch, StageStarted
    from raykd.core.spec import parse_spec
    from raykd.engine import Lifecycle, open_job

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    for stream in (io.StringIO(), Closed()):
        job = open_job(parse_spec(digits_spec(str(tmp_path / "runs"))),
                       job_dir=tmp_path / f"job-{type(stream).__name__}", log=lambda _: None)
        console = ConsoleEvents(Display(stream, bar=False))

        def stages(life: Lifecycle) -> dict[str, object]:
            life.job.emit(StageStarted(stage="students"))
            life.job.emit(Epoch(student=0, epoch=1, epochs=1, label="kd",
                                metrics={"val_accuracy": 0.5}))
            result = life.job.job_dir / "result.json"
            result.write_text("{}")
            return life.reuse_result(result)

        Lifecycle(job, callbacks=[console]).run(stages)  # a broken console: no error here
        if isinstance(stream, Closed):
            assert console.stopped
            said = capsys.readouterr().err
            assert "the console stopped showing the job's events (BrokenPipeError" in said, said
            assert str(job.layout.events) in said
        else:
            shown = stream.getvalue().splitlines()
            assert shown[0].startswith("raykd: ") and any("epoch 1/1" in x for x in shown), shown
            assert "finished" in shown[-1], shown


def test_a_refused_ray_log_fails_the_job_with_its_event(tmp_path: Path) -> None:
    """``raykd run`` on a job directory whose ray.log is a planted link: the job ends with a
    ``job_failed`` event naming the file (not a job left "running"), exit code 2, one line."""
    from raykd.core.events import read_events
    from raykd.core.spec import parse_spec
    from raykd.engine.context import open_job

    spec = digits_spec(str(tmp_path / "runs"))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    job_dir = tmp_path / "job"
    open_job(parse_spec(spec), job_dir=job_dir, log=lambda _: None).close()  # an attempt 1
    (job_dir / "ray.log").symlink_to(tmp_path / "elsewhere")
    proc = subprocess.run([str(RAYKD), "run", "spec.yaml", "--job-dir", str(job_dir)],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    problem = (f"cannot open Ray's log {job_dir / 'ray.log'} (it is a symbolic link); accepted: "
               "a regular file the job's owner can write, or none")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == f"error: {problem}"
    last = read_events(job_dir / "events.jsonl")[-1]
    assert (last.type, last.kind, last.message) == ("job_failed", "user_error", problem)
    assert not (tmp_path / "elsewhere").exists()


def test_a_sweep_diverts_rays_output_to_its_own_job_and_names_it_on_failure(
        tmp_path: Path) -> None:
    """``raykd sweep``: the sweep's job gets the diversion too (entered once its job is open);
    a failure after that ends with the error and ray.log's path on the terminal, and a
    ``job_failed`` event."""
    from raykd.core.events import read_events

    job_dir, missing = tmp_path / "job", tmp_path / "missing.npz"
    proc = subprocess.run([str(RAYKD), "sweep", "digits-sweep", "--set",
                           f"data.dataset={missing}", "--job-dir", str(job_dir)],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == f"raykd: Ray's own output (workers, warnings): {job_dir / 'ray.log'}\n"
    assert proc.stderr.splitlines() == [f"error: data file '{missing}' does not exist",
                                        f"Ray's own output: {job_dir / 'ray.log'}"]
    last = read_events(job_dir / "events.jsonl")[-1]
    assert (last.type, last.kind) == ("job_failed", "user_error")
