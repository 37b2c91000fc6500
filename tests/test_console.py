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

from tests.conftest import digits_spec

RAYKD = Path(sys.executable).parent / "raykd"
ROOT = Path(__file__).resolve().parents[1]
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
    assert "Token authentication is enabled" in log, log[-3000:]
    assert "\x1b[" not in log, "Ray's prefixes in ray.log carry colour codes"


def test_errors_reach_the_console_and_name_rays_log(tmp_path: Path) -> None:
    """With Ray's output diverted, a failing command still prints its one-line error (and
    where Ray's lines are); what Ray writes to stdout, stderr or the raw descriptors does not."""
    script = textwrap.dedent(f"""
        import os, sys
        from raykd.cli.common import echo_log, guarded
        from raykd.console import divert_ray_output
        from raykd.core.spec import SpecError

        assert divert_ray_output({str(tmp_path / 'ray.log')!r})
        echo_log("stage data done")
        print("(TeacherServer pid=1) from a worker")
        print("a Ray warning", file=sys.stderr)
        os.write(2, b"core_worker.cc:1: from C++\\n")

        def fail():
            raise SpecError("teachers: at least one is required")

        try:
            guarded(fail)
        except Exception as exit:  # typer.Exit, as the command line ends
            sys.exit(exit.exit_code)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "raykd: stage data done\n"
    assert proc.stderr.splitlines() == ["error: teachers: at least one is required",
                                        f"Ray's own output: {tmp_path / 'ray.log'}"]
    log = (tmp_path / "ray.log").read_text()
    for line in ("(TeacherServer pid=1) from a worker", "a Ray warning", "core_worker.cc:1"):
        assert line in log


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
