"""The import-hygiene check: what a fresh interpreter loads when it imports some raykd modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.helpers.paths import ROOT


def heavy_imports(code: str, heavy: tuple[str, ...]) -> list[str]:
    """The modules of the top-level packages ``heavy`` that ``code`` loads, in a fresh process.

    ``code`` runs with this checkout first on ``sys.path`` (not an installed raykd); it fails
    the caller's test with its output when it raises.
    """
    script = (
        f"{code}\nimport sys\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))  # a printed list


def assert_imports_none_of(modules: list[str], heavy: tuple[str, ...]) -> None:
    """Importing ``modules`` in a fresh interpreter loads no module of the packages ``heavy``."""
    loaded = heavy_imports("".join(f"import {m}\n" for m in modules), heavy)
    assert loaded == [], f"importing {', '.join(modules)} loads {loaded}"
