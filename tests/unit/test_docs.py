"""The docs: the README is a short front door, the site builds strict, the reference is current.

``mkdocs build --strict`` fails on any warning: a link to a page, an anchor or a repository
file that does not exist, a docstring mkdocstrings cannot render. The reference pages under
docs/reference/ are generated from the code (``python -m raykd.docs_gen``); a change to a
spec field, a command, a route or a setting without regenerating them fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raykd import docs_gen
from tests.helpers.paths import ROOT

README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
MAX_README_LINES = 200


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_the_site_builds_strict_with_every_page_and_the_generated_reference(tmp_path: Path) -> None:
    done = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    site = tmp_path / "site"
    spec = (site / "reference" / "spec" / "index.html").read_text(encoding="utf-8")
    assert "incorrect_weight" in spec and "ParamSpace" in spec
    client = (site / "reference" / "client" / "index.html").read_text(encoding="utf-8")
    assert "download_all" in client, "mkdocstrings rendered no member of RaykdClient"
    # a repository file a page links to outside docs/ is in the site, where the link points
    assert (site / "raykd" / "bench" / "results" / "wkd_tracks.png").is_file()
    assert 'href="../raykd/bench/results/wkd/"' in (
        site / "benchmarks" / "index.html").read_text(encoding="utf-8")


def test_a_broken_link_anchor_or_repository_file_fails_the_build(tmp_path: Path) -> None:
    """The real config's checks (strict, validation, the hook) on a page with three bad links."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n## Here\n\n[ok](other.md#there) [ok](#here)\n"
                                   "[repo](../pyproject.toml)\n", encoding="utf-8")
    (docs / "other.md").write_text("# Other\n\n## There\n\n[bad page](missing.md) "
                                   "[bad anchor](index.md#nowhere) "
                                   "[bad file](../raykd/no_such_file.md)\n", encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    config.update(docs_dir="docs", nav=["index.md", "other.md"], plugins=[],
                  hooks=[str(ROOT / "raykd" / "docs_gen" / "mkdocs_hooks.py")])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "'missing.md'" in log and "'#nowhere'" in log and "raykd/no_such_file.md" in log, log
    for good in ("'other.md#there'", "'#here'", "pyproject.toml"):
        assert good not in log, f"a good link was reported:\n{log}"


def test_the_generated_reference_pages_are_current() -> None:
    """Every page generated with the installed pydantic/typer/click/FastAPI is current; a page
    whose libraries are other versions here is skipped, naming them (their text may differ)."""
    stale = docs_gen.stale()
    assert not stale, (f"stale: {stale}; run `python -m raykd.docs_gen` and commit "
                       "docs/reference/")
    drifted = docs_gen.drifted()
    if drifted:
        pytest.skip("not compared: " + "; ".join(f"{page} {why}" for page, why in drifted.items()))


def test_other_library_versions_skip_a_page_and_the_same_ones_check_it(tmp_path: Path) -> None:
    """A page generated with another click is not compared (its text may differ with no change
    in raykd); with the installed versions the same edit makes it stale; without a record of
    the versions, the record is what is stale."""
    docs_gen.write(tmp_path)
    reference = tmp_path / docs_gen.REFERENCE
    cli = reference / "cli.md"
    cli.write_text(cli.read_text(encoding="utf-8").replace("Override a spec field", "Override"),
                   encoding="utf-8")
    assert docs_gen.stale(tmp_path) == ["cli.md"] and docs_gen.drifted(tmp_path) == {}
    record = json.loads((reference / docs_gen.VERSIONS).read_text(encoding="utf-8"))
    installed = record["click"]
    (reference / docs_gen.VERSIONS).write_text(json.dumps({**record, "click": "0.1"}))
    assert docs_gen.stale(tmp_path) == []
    assert docs_gen.drifted(tmp_path) == {
        "cli.md": f"generated with click 0.1 (installed {installed})"}
    (reference / docs_gen.VERSIONS).unlink()
    assert docs_gen.stale(tmp_path) == [docs_gen.VERSIONS]


def test_a_changed_field_makes_its_page_stale(tmp_path: Path) -> None:
    docs_gen.write(tmp_path)
    assert docs_gen.stale(tmp_path) == []
    spec = tmp_path / docs_gen.REFERENCE / "spec.md"
    spec.write_text(spec.read_text(encoding="utf-8").replace("WKD's W", "W"), encoding="utf-8")
    assert docs_gen.stale(tmp_path) == ["spec.md"]


def test_the_spec_reference_has_every_field_of_every_section() -> None:
    from raykd.core.spec import JobSpec, ModelSpec, ParamSpace

    page = docs_gen.spec_reference()
    models = docs_gen._models(JobSpec)
    assert {ModelSpec, ParamSpace} <= set(models)
    assert models[ModelSpec] == ["teachers[].model", "student.model"]
    for model in models:
        section = page.split(f"\n## {model.__name__}\n", 1)[1].split("\n## ", 1)[0]
        for name in model.model_fields:
            assert f"| `{name}` |" in section, f"{model.__name__}.{name} is not in the reference"
    assert "| `incorrect_weight` | number | `0.75` | > 0, <= 1 |" in page


def test_docs_gen_refuses_unknown_arguments_in_one_line(capsys) -> None:
    assert docs_gen.main(["--chek"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--chek" in err and "accepted: --check" in err


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count("\n") <= MAX_README_LINES, "the README is a front door: move detail to docs/"
    targets = [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]
    assert targets, "the README links to no docs page"
    for target in targets:
        path = (ROOT / target.split("#", 1)[0]).resolve()
        assert path.is_file(), f"README links to {target}, which does not exist"


def test_the_readme_links_every_page_of_the_site() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: list) -> list[str]:
        found = []
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [value]
        return found

    linked = {t.split("#", 1)[0] for t in LINK.findall(README.read_text(encoding="utf-8"))}
    missing = [p for p in pages(config["nav"]) if f"docs/{p}" not in linked]
    assert not missing, f"pages the README does not link: {missing}"


def test_ci_runs_the_readmes_test_command() -> None:
    readme = README.read_text(encoding="utf-8")
    command = readme.split("## Tests (one command", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command.endswith('pip install -e ".[test]" && python -m pytest -q')
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -q -e ".[test]"' in ci and ci.rstrip().endswith("python -m pytest -q")
