"""Reading a spec: the YAML mapping of a spec file or of a bundled example
(``raykd/examples/*.yaml``), before :func:`raykd.core.spec.parse_spec` validates it.
Every problem is a one-line :class:`~raykd.core.errors.SpecError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from raykd.core.errors import SpecError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""The bundled example specs (``raykd/examples/*.yaml``)."""


def read_mapping(source: str | Path) -> dict[str, Any]:
    """The YAML mapping of a spec file, or of a bundled example by name (``mnist-wkd``)."""
    path = _spec_path(source)
    try:
        return read_spec_text(_spec_text(path))[0]
    except SpecTextError as err:
        raise SpecError(f"{path}: {err}") from None


MAX_SPEC_NODES = 20_000


class SpecTextError(SpecError):
    """A spec text that is not a readable mapping; ``line`` (from 1) when one is to blame."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def read_spec_text(text: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in ``text`` and ``{"train.epochs": line, ...}`` (lines from 1): the one
    reader of a spec's YAML (or JSON), for spec files, examples and the dashboard alike.

    Anchors and aliases are refused (a few aliases can expand to gigabytes of JSON), and
    so are documents of more than ``MAX_SPEC_NODES`` nodes and values JSON cannot carry.
    """
    if not text.strip():
        raise SpecTextError("the spec is empty: give a YAML or JSON mapping "
                            "(name: ..., data: ..., teachers: ...)")
    data, lines = _checked_yaml(text, mapping=True)
    if not isinstance(data, dict):
        raise SpecTextError("a spec is a mapping (name: ..., data: ..., teachers: ...)")
    return data, lines


def read_value(text: str) -> Any:
    """One YAML value (a ``--set`` override), under the spec reader's rules: no anchors or
    aliases, no more than ``MAX_SPEC_NODES`` nodes, only values JSON can carry."""
    return _checked_yaml(text, mapping=False)[0]


def _checked_yaml(text: str, *, mapping: bool) -> tuple[Any, dict[str, int]]:
    """``text``'s value and the line of each path in it, refusing what a spec may not hold."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        where = f"line {line}: " if line else ""
        raise SpecTextError(f"not valid YAML or JSON: {where}{err.problem or err}", line) from None
    except (yaml.YAMLError, RecursionError) as err:
        raise SpecTextError(f"not valid YAML or JSON: {str(err).splitlines()[0][:200]}") from None
    if mapping and not isinstance(root, yaml.MappingNode):
        raise SpecTextError("a spec is a mapping (name: ..., data: ..., teachers: ...)",
                            root.start_mark.line + 1 if root is not None else None)
    lines: dict[str, int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in seen:
            raise SpecTextError("anchors and aliases (&, *) are not supported in a spec",
                                node.start_mark.line + 1)
        seen.add(id(node))
        if len(seen) > MAX_SPEC_NODES:
            raise SpecTextError(f"the spec has more than {MAX_SPEC_NODES} values")
        if path:
            lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value)
                lines.setdefault(f"{path}.{name}" if path else name, key.start_mark.line + 1)
                walk(value, f"{path}.{name}" if path else name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}.{i}" if path else str(i))

    try:
        if root is not None:
            walk(root, "")
        data = yaml.safe_load(text)
    except SpecTextError:
        raise  # walk's own, with its line (a ValueError too: not "a value cannot be read")
    except RecursionError:
        raise SpecTextError("not valid YAML or JSON: nested too deeply") from None
    except yaml.YAMLError as err:
        raise SpecTextError(f"not valid YAML or JSON: {str(err).splitlines()[0][:200]}") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts (4,300)
        raise SpecTextError(f"a value cannot be read: {str(err).splitlines()[0][:200]}") from None
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        what = "the spec holds" if mapping else "the value is one of the"
        raise SpecTextError(f"{what} values JSON cannot carry (dates, NaN, binary)") from None
    return data, lines


def _spec_path(source: str | Path) -> Path:
    """``source`` as an existing path, else the bundled example of that name."""
    path = Path(source)
    try:
        exists = path.exists()
    except OSError as err:  # e.g. a name too long for the file system
        raise SpecError(f"spec {str(source)!r} cannot be opened ({err.strerror or err})") from None
    if not exists:
        return example_path(str(source))
    if path.is_dir():
        raise SpecError(
            f"spec {str(path)!r} is a directory; expected a YAML file or a bundled example"
        )
    return path


def _spec_text(path: Path) -> str:
    """The spec file's text; SpecError naming the file when it cannot be read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"spec {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); expected a YAML file"
        ) from None
    except OSError as err:
        raise SpecError(f"spec {str(path)!r} cannot be read ({err.strerror or err})") from None


def example_names() -> list[str]:
    """The specs bundled with the package (``raykd/examples/*.yaml``)."""
    root = EXAMPLES
    return sorted(p.stem for p in root.glob("*.yaml"))


def example_path(name: str) -> Path:
    """Path of a bundled example spec; SpecError listing the examples when unknown."""
    path = EXAMPLES / f"{name.removesuffix('.yaml')}.yaml"
    if not path.exists():
        raise SpecError(
            f"spec {name!r} is neither a file nor a bundled example; examples: {example_names()}"
        )
    return path
