"""Reading a spec: the YAML mapping of a spec file or of a bundled example
(``raykd/examples/*.yaml``), before :func:`raykd.spec.parse_spec` validates it.
Every problem is a one-line :class:`~raykd.errors.SpecError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from raykd.errors import SpecError


def read_mapping(source: str | Path) -> dict[str, Any]:
    """The YAML mapping of a spec file, or of a bundled example by name (``mnist-wkd``)."""
    path = _spec_path(source)
    try:
        data = yaml.safe_load(_spec_text(path))
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts (4,300)
        raise SpecError(f"{path}: a value cannot be read ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(data).__name__}")
    return data


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
    root = Path(__file__).parent / "examples"
    return sorted(p.stem for p in root.glob("*.yaml"))


def example_path(name: str) -> Path:
    """Path of a bundled example spec; SpecError listing the examples when unknown."""
    path = Path(__file__).parent / "examples" / f"{name.removesuffix('.yaml')}.yaml"
    if not path.exists():
        raise SpecError(
            f"spec {name!r} is neither a file nor a bundled example; examples: {example_names()}"
        )
    return path
