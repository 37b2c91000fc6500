"""Where a raykd module may import another raykd module inside a function, and why.

An import belongs at the top of its module. ``ALLOWED`` lists the function-local ones that
stay, as ``(module, imported module): reason``, the reason one of:

- ``LIGHT`` (a): keeps torch, Ray or FastAPI out of a module that must load without them:
  the torch-free floor, the service, the client, the CLI's command modules (so that
  ``raykd --help`` and ``raykd serve`` stay light), ``raykd``'s lazy attributes, the
  speed bench's plain rows (each runs ``python -m raykd.bench.plain`` and measures its own
  memory), and ``raykd.tune``'s ``run_sweep`` (a sweep's trial processes import the package
  and never run the engine);
- ``OPTIONAL`` (b): keeps an optional heavy library (transformers, onnx, matplotlib, Ray
  Train's torch backend) out of the jobs that do not use it;
- ``CIRCLE`` (c): would hold off an import circle still to be broken (none is left:
  test_layers.py fails on any circle at run time);
- ``LEFT`` (d): none of these; the module is being changed by another piece of work, and
  its imports go to the top when that lands.

The test fails on a function-local import that is not listed, and on a listed one that is
gone (so the list only shrinks). The second half checks that the light entry points load no
torch and no Ray.
"""

from __future__ import annotations

import ast

import pytest

from tests.helpers.imports import heavy_imports
from tests.helpers.paths import PACKAGE

LIGHT = "(a) keeps torch/Ray/FastAPI out of a light module"
OPTIONAL = "(b) keeps an optional heavy library out of jobs that do not use it"
CIRCLE = "(c) holds off an import circle (none left: test_layers fails on one)"
LEFT = "(d) left: file being changed"

ALLOWED: dict[tuple[str, str], str] = {
    # raykd's lazy attributes: `import raykd.losses` loads neither pydantic's spec nor the engine
    ("raykd", "raykd.core"): LIGHT,
    ("raykd", "raykd.engine"): LIGHT,
    # the CLI's command modules: `raykd --help` builds every command and runs none; each
    # command loads what it runs (the console and the spec load pydantic, the client httpx,
    # the service FastAPI, predict/export/bench/engine/tune torch and Ray)
    ("raykd.cli", "raykd.console"): LIGHT,
    ("raykd.cli.artifacts", "raykd.export"): LIGHT,
    ("raykd.cli.artifacts", "raykd.predict"): LIGHT,
    ("raykd.cli.artifacts", "raykd.predict_models"): LIGHT,
    ("raykd.cli.artifacts", "raykd.predict_spans"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.api"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.quality"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.span_quality"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.speed"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.sweep"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.text_speed"): LIGHT,
    ("raykd.cli.bench", "raykd.bench.wkd"): LIGHT,
    ("raykd.cli.common", "raykd"): LIGHT,  # from raykd import console
    ("raykd.cli.common", "raykd.core.spec"): LIGHT,
    ("raykd.cli.common", "raykd.core.spec_io"): LIGHT,  # YAML
    ("raykd.cli.control", "raykd.client"): LIGHT,
    ("raykd.cli.control", "raykd.console_text"): LIGHT,  # pydantic, through core's events
    ("raykd.cli.control", "raykd.service.app"): LIGHT,
    ("raykd.cli.control", "raykd.service.settings"): LIGHT,
    ("raykd.cli.local", "raykd"): LIGHT,  # from raykd import console
    ("raykd.cli.local", "raykd.cli.job_console"): LIGHT,  # loads the engine
    ("raykd.cli.local", "raykd.console_text"): LIGHT,
    ("raykd.cli.local", "raykd.core.spec"): LIGHT,
    ("raykd.cli.local", "raykd.engine"): LIGHT,
    ("raykd.cli.local", "raykd.tune"): LIGHT,
    # the speed bench's plain rows: each runs `python -m raykd.bench.plain` in a fresh process
    # and measures its own peak RSS, so that module loads only what its row's loop uses
    ("raykd.bench.plain", "raykd.core.spec"): LIGHT,
    ("raykd.bench.plain", "raykd.data"): LIGHT,
    ("raykd.bench.plain", "raykd.losses"): LIGHT,
    ("raykd.bench.plain", "raykd.models"): LIGHT,
    ("raykd.bench.plain", "raykd.train.config"): LIGHT,
    ("raykd.bench.plain", "raykd.train.loop"): LIGHT,
    ("raykd.bench.plain", "raykd.train.steps"): LIGHT,
    # Ray Train (ray.train.torch: ~4 s of imports on a loaded 2-CPU machine, ~1.5 s in a trial
    # process, which has Ray Tune's share of it) loads only for students and trials of
    # scaling runner 'train' / several workers: every other job's start would pay it
    ("raykd.engine.students", "raykd.train.trainer"): OPTIONAL,
    ("raykd.tune.trial", "raykd.train.trainer"): OPTIONAL,
    # a sweep's trial process imports raykd.tune (the package of raykd.tune.trial, which it
    # unpickles): run_sweep's driver would bring the engine (~40 modules) into every trial
    ("raykd.tune", "raykd.tune.driver"): LIGHT,
}


def local_imports(source: str) -> set[str]:
    """The raykd modules that ``source`` imports inside a function (``from raykd import x``
    names ``raykd``; ``from raykd.a import b`` names ``raykd.a``)."""
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.ImportFrom) and child.level == 0:
                found.add(child.module or "")
            elif in_function and isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(source), False)
    return {m for m in found if m == "raykd" or m.startswith("raykd.")}


def package_local_imports() -> set[tuple[str, str]]:
    """(module, imported module) for every function-local raykd import in the package."""
    pairs: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        pairs |= {(module, imported) for imported in local_imports(path.read_text("utf-8"))}
    return pairs


def test_local_imports_finds_imports_in_functions_and_methods_only() -> None:
    source = ("import raykd.core\nfrom raykd.data import Dataset\nimport json\n"
              "def f():\n    from raykd.engine import run_job\n    import os\n"
              "class C:\n    async def m(self):\n        if True:\n            import raykd.tune\n"
              "    def n(self):\n        def inner():\n            from raykd import console\n")
    assert local_imports(source) == {"raykd.engine", "raykd.tune", "raykd"}


def test_every_function_local_import_has_a_reason() -> None:
    found = package_local_imports()
    unlisted = sorted(found - set(ALLOWED))
    assert unlisted == [], ("move these imports to the top of the module, or list them in "
                            "ALLOWED with the reason they must stay in a function")
    gone = sorted(set(ALLOWED) - found)
    assert gone == [], "these imports are no longer in a function: remove them from ALLOWED"


def test_every_reason_is_one_of_the_four() -> None:
    assert set(ALLOWED.values()) <= {LIGHT, OPTIONAL, CIRCLE, LEFT}


# ---- the light entry points load no torch and no Ray ------------------------------------------

HEAVY = ("torch", "ray", "transformers", "onnx", "onnxruntime", "matplotlib")

LIGHT_ENTRY_POINTS = {
    # `raykd --help`: the whole CLI is built (every command's options), nothing runs
    "raykd --help": ("import sys\nsys.argv = ['raykd', '--help']\nfrom raykd.cli import main\n"
                     "try:\n    main()\nexcept SystemExit:\n    pass\n"),
    # `raykd serve` builds the service's app
    "raykd serve's app": ("from raykd.service.app import create_app\n"
                          "from raykd.service.settings import Settings\n"),
    "raykd.core": "import raykd.core, raykd.core.spec, raykd.core.status, raykd.core.results\n",
    "raykd.client": "import raykd.client\n",
    "raykd.docs_gen": "import raykd.docs_gen.api_page, raykd.docs_gen.cli_page\n",
}


@pytest.mark.parametrize("entry", sorted(LIGHT_ENTRY_POINTS))
def test_a_light_entry_point_loads_no_torch_and_no_ray(entry: str) -> None:
    loaded = heavy_imports(LIGHT_ENTRY_POINTS[entry], HEAVY)
    assert loaded == [], f"{entry} loads {loaded[:5]}"


def test_raykd_help_loads_no_pydantic_httpx_or_fastapi() -> None:
    """`raykd --help` stays a bare typer app: the spec, the client and the service load only
    with the command that uses them."""
    loaded = heavy_imports(LIGHT_ENTRY_POINTS["raykd --help"],
                           ("pydantic", "httpx", "fastapi", "sqlalchemy", "numpy"))
    assert loaded == [], f"raykd --help loads {loaded[:5]}"


def test_a_sweep_trial_process_loads_no_engine() -> None:
    """A trial process unpickles raykd.tune.trial, which imports the raykd.tune package:
    ``run_sweep``'s driver (and with it the engine) loads there only on first use."""
    loaded = heavy_imports("import raykd.tune.trial\n", ("raykd",))
    assert "raykd.tune.trial" in loaded  # the check sees raykd's modules
    assert not [m for m in loaded if m == "raykd.engine" or m.startswith("raykd.engine.")
                or m == "raykd.tune.driver"], [m for m in loaded if "engine" in m]
