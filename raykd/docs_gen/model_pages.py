"""The pages made from pydantic models: ``spec.md`` (every section and field of a job spec)
and ``settings.md`` (every ``RAYKD_*`` setting of ``raykd serve``)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from raykd.core.spec import JobSpec
from raykd.docs_gen.words import HEADER, TABLE_HEAD, field_rows, prose
from raykd.service.settings import Settings

__all__ = ["settings_reference", "spec_reference"]


def _models(root: type[BaseModel]) -> dict[type[BaseModel], list[str]]:
    """Every model reachable from ``root``, in the order of its fields, with every path to it."""
    found: dict[type[BaseModel], list[str]] = {root: [""]}
    queue = [(root, "")]
    while queue:
        model, path = queue.pop(0)
        for key, field in model.model_fields.items():
            for sub, suffix in _submodels(field.annotation):
                where = f"{path}.{key}{suffix}".lstrip(".")
                found.setdefault(sub, []).append(where)
                queue.append((sub, where))
    return found


def _submodels(tp: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models a type holds, each with ``[]`` per list it sits in."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp, suffix
        return
    origin = typing.get_origin(tp)
    for arg in typing.get_args(tp):
        inner = suffix + "[]" if origin in (list, tuple, set) else suffix
        if origin is dict:
            inner = suffix + ".<key>"
        yield from _submodels(arg, inner)


SPEC_INTRO = (
    "Every field of a job spec (`raykd run SPEC`, `raykd submit SPEC`, `POST /api/v1/jobs`), "
    "from the pydantic models in `raykd/core/spec/`. Unknown keys are refused; a value out of "
    "its bounds ends with one line naming the field, the value and what is accepted (exit 2, or "
    "422 from the API). The sections:\n\n"
)


def spec_reference() -> str:
    """docs/reference/spec.md: every section and field of a job spec."""
    models = _models(JobSpec)
    lines = [HEADER.format(source="raykd/core/spec/ (pydantic)"), "# Spec reference\n\n",
             SPEC_INTRO]
    lines += [f"- {_link_to_section(model)}: {_where(paths, 'the spec itself')}\n"
              for model, paths in models.items()]
    for model, paths in models.items():
        lines += [f"\n## {model.__name__}\n\n",
                  f"At {_where(paths, 'the top level')}. {prose(model.__doc__)}\n\n", TABLE_HEAD]
        lines += [row + "\n" for row in field_rows(model, str, _link_to_section)]
    return "".join(lines)


def _where(paths: list[str], root: str) -> str:
    return ", ".join(f"`{p}`" for p in paths) if paths != [""] else root


def _link_to_section(model: type[BaseModel]) -> str:
    return f"[{model.__name__}](#{model.__name__.lower()})"


# ---- the service's settings -----------------------------------------------------------------

def settings_reference() -> str:
    """docs/reference/settings.md: every ``RAYKD_*`` setting of ``raykd serve``."""
    prefix = Settings.model_config.get("env_prefix", "")
    return "".join([
        HEADER.format(source="raykd/service/settings.py (pydantic-settings)"),
        "# Settings of `raykd serve`\n\n", prose(Settings.__doc__) + " ",
        "Each is an environment variable, or a line of the file that `raykd serve --env-file F` "
        "(or `RAYKD_ENV_FILE`) names; the environment wins. See also "
        "[the control plane](../control-plane.md#settings).\n\n",
        TABLE_HEAD.replace("| field |", "| variable |"),
        *(row + "\n" for row in field_rows(Settings, lambda k: f"{prefix}{k}".upper(),
                                           lambda m: m.__name__)),
    ])
