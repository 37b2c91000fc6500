"""The raykd command line, run in this process (click's runner) or as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def cli(*args: str | Path) -> Any:
    """The raykd command line in this process (click's runner: stdout and stderr apart), the
    same app as a fresh process runs without paying a process start (~5-10 s) per call;
    :func:`raykd_process` runs it as a user does where the fresh process itself matters."""
    from typer.testing import CliRunner

    from raykd.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def cli_exit(*args: str | Path) -> tuple[int, str]:
    """:func:`cli`'s exit code and output."""
    result = cli(*args)
    return result.exit_code, result.output


def one_line_error(code: int, output: str) -> str:
    """The one ``error:`` line of a refused command (exit code 2, no traceback)."""
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def raykd_process(
    *args: str | Path, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The raykd command line, as a user runs it (a fresh process; no Ray address inherited)."""
    env = {**os.environ, "RAY_ADDRESS": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "raykd", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
