"""The control plane's shape (issue 21, items 3 and 4): each module of ``raykd/service``
stays short, and none imports a private name (``_x``) of another: what one module needs
of another is public there (as the dashboard's use of the token comparison is now)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.paths import PACKAGE

SERVICE = PACKAGE / "service"
MAX_LINES = 340  # "about 350": the longest today is follower.py (331)


def _modules() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if "migrations" not in p.parts)


def test_service_modules_are_short() -> None:
    long = {str(p.relative_to(SERVICE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): {long}"


def test_no_service_module_imports_a_private_name_of_another() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raykd.service")
                    and any(a.name.startswith("_") for a in node.names)):
                found.append(f"{path.relative_to(SERVICE)}: from {node.module} import "
                             + ", ".join(a.name for a in node.names))
    assert not found, found
