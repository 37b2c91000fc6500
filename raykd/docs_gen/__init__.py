"""The generated reference pages of the docs, made from the code so that they cannot drift.

``python -m raykd.docs_gen`` writes ``docs/reference/``: ``spec.md`` (every field of
:class:`raykd.core.spec.JobSpec` and its sections: type, default, bounds, description), ``cli.md``
(every ``raykd`` command, argument and option), ``api.md`` (every route of the control
plane's OpenAPI document) and ``settings.md`` (every ``RAYKD_*`` setting of ``raykd serve``).
``python -m raykd.docs_gen --check`` writes nothing and exits 1 naming each page that differs
from what the code gives now (``tests/unit/test_docs.py`` runs it). ``versions.json`` beside the
pages records the versions of pydantic, typer/click and FastAPI they were generated with; a
page whose libraries are installed in other versions is not compared (it is named, with the
versions), since a release of those may change its text with no change in raykd.

One module per page (:mod:`~raykd.docs_gen.model_pages` for spec.md and settings.md,
:mod:`~raykd.docs_gen.cli_page`, :mod:`~raykd.docs_gen.api_page`), fields in words
(:mod:`~raykd.docs_gen.words`), and the MkDocs hook of ``mkdocs.yml``
(:mod:`~raykd.docs_gen.mkdocs_hooks`: links from the docs to files elsewhere in the
repository); this module writes and checks the pages.
"""


from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from raykd.docs_gen.api_page import api_reference
from raykd.docs_gen.cli_page import cli_reference
from raykd.docs_gen.model_pages import _models, settings_reference, spec_reference
from raykd.docs_gen.words import REFERENCE, ROOT

__all__ = [
    "PAGES", "PAGE_LIBRARIES", "REFERENCE", "ROOT", "VERSIONS", "api_reference", "cli_reference",
    "drifted", "installed_versions", "main", "recorded_versions", "settings_reference",
    "spec_reference", "stale", "write", "_models",
]

PAGES: dict[str, Callable[[], str]] = {
    "spec.md": spec_reference, "cli.md": cli_reference, "api.md": api_reference,
    "settings.md": settings_reference,
}


PAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "spec.md": ("pydantic", "pydantic-core"),
    "cli.md": ("typer", "click"),
    "api.md": ("fastapi", "starlette", "pydantic", "pydantic-core"),
    "settings.md": ("pydantic", "pydantic-core", "pydantic-settings"),
}
"""The libraries whose output each page's text comes from (their descriptions, constraints
and flags are rendered as those versions render them)."""
VERSIONS = "versions.json"
"""Next to the pages: the versions of :data:`PAGE_LIBRARIES` they were generated with."""


def installed_versions() -> dict[str, str]:
    """The installed version of every library in :data:`PAGE_LIBRARIES`."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in sorted({lib for libs in PAGE_LIBRARIES.values() for lib in libs}):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def recorded_versions(root: Path = ROOT) -> dict[str, str] | None:
    """The versions the pages under ``root`` were generated with (None: no readable record)."""
    try:
        data = json.loads((root / REFERENCE / VERSIONS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not set(installed_versions()) <= set(data):
        return None
    return {str(k): str(v) for k, v in data.items()}


def drifted(root: Path = ROOT) -> dict[str, str]:
    """``{page: why}`` for each page generated with other versions of its libraries than the
    installed ones: :func:`stale` does not compare its text (another release may word a
    description, a bound or a flag differently with no change in raykd)."""
    recorded, installed = recorded_versions(root), installed_versions()
    if recorded is None:
        return {}
    found = {}
    for page, libs in PAGE_LIBRARIES.items():
        changed = [f"{lib} {recorded[lib]} (installed {installed[lib]})" for lib in libs
                   if recorded[lib] != installed[lib]]
        if changed:
            found[page] = "generated with " + ", ".join(changed)
    return found


def stale(root: Path = ROOT) -> list[str]:
    """The generated pages under ``root`` that differ from what the code gives now, among those
    generated with the installed libraries (:func:`drifted` names the others); ``versions.json``
    when the record of those versions is missing."""
    if recorded_versions(root) is None:
        return [VERSIONS]
    skip = drifted(root)
    return [name for name, make in PAGES.items() if name not in skip
            and (not (root / REFERENCE / name).is_file()
                 or (root / REFERENCE / name).read_text(encoding="utf-8") != make())]


def write(root: Path = ROOT) -> list[Path]:
    """Write every generated page under ``root``; returns their paths."""
    (root / REFERENCE).mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in PAGES.items():
        target = root / REFERENCE / name
        target.write_text(make(), encoding="utf-8")
        written.append(target)
    versions = root / REFERENCE / VERSIONS
    versions.write_text(json.dumps(installed_versions(), indent=2) + "\n", encoding="utf-8")
    return [*written, versions]


def main(argv: list[str] | None = None) -> int:
    """``python -m raykd.docs_gen [--check]``."""
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print(f"error: unknown arguments {args}; accepted: --check (or nothing: write the pages)",
              file=sys.stderr)
        return 2
    if args == ["--check"]:
        for name, why in drifted().items():
            print(f"{REFERENCE / name} not checked: {why}; its text may differ with no change "
                  "in raykd (run `python -m raykd.docs_gen` with these versions to check it)",
                  file=sys.stderr)
        old = stale()
        for name in old:
            print(f"{REFERENCE / name} is stale: run `python -m raykd.docs_gen` and commit it",
                  file=sys.stderr)
        return 1 if old else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
