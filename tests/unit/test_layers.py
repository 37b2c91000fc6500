"""The package's import layers: a module imports only from its own layer or the ones below.

Layers, bottom first (a unit is ``raykd.<top-level module or package>``)::

    0  core, losses          torch-free floor (identity, layout, spec, events, results)
                             and the pure loss math
    1  data, client_http,    datasets, preprocessing, tokenizer windows; the HTTP client's base;
       console_text,         what a terminal shows (result tables, event lines, progress,
       console               Ray's log aside)
    2  metrics, models       scores; model builders and checkpoints
    3  train                 the student loops
    4  teachers              teacher actors and the logit cache
    5  engine                one job's lifecycle
    6  tune, artifact,       sweeps; a trained student as a file (found, loaded), predict,
       predict*, export      export
    7  bench, service, client
    8  cli
    9  raykd, __main__,      the public surface; the docs generator (reads the CLI and the API)
       docs_gen

Every import counts, at the top of a module or inside a function. ``KNOWN`` lists the
upward imports and circles that exist today, each to be removed; the test fails on any new
one, and on a known one that is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast

from tests.helpers.paths import PACKAGE

LAYER = {
    "raykd.core": 0, "raykd.losses": 0,
    "raykd.data": 1, "raykd.client_http": 1, "raykd.console_text": 1, "raykd.console": 1,
    "raykd.metrics": 2, "raykd.models": 2,
    "raykd.train": 3, "raykd.teachers": 4, "raykd.engine": 5,
    "raykd.tune": 6, "raykd.artifact": 6, "raykd.predict": 6, "raykd.predict_text": 6,
    "raykd.predict_spans": 6, "raykd.predict_models": 6, "raykd.export": 6,
    "raykd.bench": 7, "raykd.service": 7, "raykd.client": 7,
    "raykd.cli": 8, "raykd": 9, "raykd.__main__": 9, "raykd.docs_gen": 9,
}
KNOWN: set[tuple[str, str]] = set()  # none left


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def imports() -> set[tuple[str, str]]:
    """(importing unit, imported unit) for every raykd import between two units."""
    edges: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "raykd":  # from raykd import spec -> raykd.spec
                    names = [f"raykd.{a.name}" if f"raykd.{a.name}" in LAYER else "raykd"
                             for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "raykd" or name.startswith("raykd."):
                    a, b = _unit(module), _unit(name)
                    if a != b:
                        edges.add((a, b))
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {u for edge in imports() for u in edge}
    units |= {f"raykd.{p.stem if p.is_file() else p.name}" for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert sorted(units - set(LAYER)) == []


def test_no_new_upward_import_or_circle() -> None:
    edges = imports()
    bad = {(a, b) for a, b in edges
           if LAYER[b] > LAYER[a] or (LAYER[a] == LAYER[b] and (b, a) in edges)}
    assert sorted(bad - KNOWN) == [], "an import reaches up a layer or closes a circle"
    assert sorted(KNOWN - bad) == [], "a known exception is gone: remove it from KNOWN"


def test_the_floor_imports_nothing_above_it() -> None:
    floor = {(a, b) for a, b in imports() if a in ("raykd.core", "raykd.losses")}
    assert floor == set()


# ---- circles between modules (inside a unit as well) ------------------------------------------

TYPING_CIRCLES: list[set[str]] = []  # none left
"""Groups of modules that import one another only through imports a type checker runs
(``if TYPE_CHECKING:``). At run time no two modules import one another (the test below);
a new typing circle, or a known one that takes in another module, fails too."""


def _typing_only(tree: ast.Module) -> set[int]:
    """The ids of the import statements inside ``if TYPE_CHECKING:`` blocks of ``tree``."""
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for stmt in node.body for n in ast.walk(stmt)}


def module_imports(*, typing: bool = True) -> dict[str, set[str]]:
    """Every raykd module and the raykd modules it imports (anywhere in it; ``typing=False``:
    leaving out the imports only a type checker runs)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
               .removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set() if typing else _typing_only(tree)
        for node in ast.walk(tree):
            names: list[str] = []
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                         else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            graph[module] |= {n for n in names if n in modules and n != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = {stack.pop()}
            while v not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_circles_finds_a_circle_of_three() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [{"a", "b", "c"}]


def test_no_two_modules_import_one_another_at_run_time() -> None:
    found = [sorted(c) for c in circles(module_imports(typing=False))]
    assert found == [], "modules import one another: break the circle (e.g. move what both need)"


def test_no_new_circle_through_type_checking_imports() -> None:
    new = [sorted(c) for c in circles(module_imports())
           if not any(c <= known for known in TYPING_CIRCLES)]
    assert new == [], "modules import one another for their types: move what both need down"


def test_type_checking_imports_are_told_apart() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nimport a\nif TYPE_CHECKING:\n"
                     "    import b\n    from c import d\n")
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [id(n) in _typing_only(tree) for n in imports] == [False, False, True, True]


# ---- the engine's public API ------------------------------------------------------------------

ENGINE_PUBLIC = {name for node in ast.parse((PACKAGE / "engine" / "__init__.py").read_text()).body
                 if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
                 for name in ast.literal_eval(node.value)}
# a module's name, unless a public name (the function prepare) is spelled the same
ENGINE_MODULES = {p.stem for p in (PACKAGE / "engine").glob("*.py")} - {"__init__"} - ENGINE_PUBLIC
NOT_YET: set[str] = set()  # modules of bench/ and tune/ that still reach into the engine's


def engine_internals(source: str) -> list[str]:
    """The ``raykd.engine.<module>`` imports in ``source`` (anywhere in it)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("raykd.engine."):
                found.append(node.module)
            elif node.module == "raykd.engine":
                found += [f"raykd.engine.{a.name}" for a in node.names if a.name in ENGINE_MODULES]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("raykd.engine.")]
    return found


def test_engine_internals_finds_every_form_of_a_module_import() -> None:
    source = ("from raykd.engine.cluster import ensure_ray\nimport raykd.engine.run\n"
              "from raykd.engine import context, Job\n"
              "def f():\n    from raykd.engine.scores import model_scores\n")
    assert sorted(engine_internals(source)) == ["raykd.engine.cluster", "raykd.engine.context",
                                                "raykd.engine.run", "raykd.engine.scores"]
    assert engine_internals("from raykd.engine import Job, prepare\n") == []


def test_tune_and_bench_use_only_the_engines_public_api() -> None:
    """``raykd.tune`` and ``raykd.bench`` import the engine's names from ``raykd.engine``."""
    paths = [*(PACKAGE / "tune").rglob("*.py"), *(PACKAGE / "bench").rglob("*.py")]
    inside = {str(p.relative_to(PACKAGE)): engine_internals(p.read_text(encoding="utf-8"))
              for p in paths if p.name not in NOT_YET}
    assert {p: found for p, found in inside.items() if found} == {}, \
        "import these from raykd.engine (add the name to its __all__ if it is missing)"
