"""``api.md``: every route of the control plane's OpenAPI document."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from raykd.docs_gen.words import HEADER, prose
from raykd.service.app import create_app
from raykd.service.settings import Settings

__all__ = ["api_reference"]


def api_reference() -> str:
    """docs/reference/api.md: every route of the control plane, from its OpenAPI document."""
    with tempfile.TemporaryDirectory() as storage:  # the defaults, not this shell's RAYKD_*
        settings = Settings.model_construct(token=SecretStr("d" * 32), storage=Path(storage))
        schema = create_app(settings).openapi()
    lines = [HEADER.format(source="the OpenAPI document of raykd.service.app"),
             "# REST API\n\n", prose(schema["info"].get("description")) + " ",
             "A running service serves this document at `GET /openapi.json` (with a token or a "
             "dashboard session). Every route but `/healthz` needs `Authorization: Bearer TOKEN` "
             "or a dashboard session; see [the control plane](../control-plane.md#rest-api).\n\n",
             "| method | path | what it does |\n|---|---|---|\n"]
    operations = [(path, method.upper(), op) for path, ops in schema["paths"].items()
                  for method, op in ops.items()]
    lines += [f"| {m} | [`{p}`](#{_op_anchor(m, p)}) | {prose(op.get('summary'))} |\n"
              for p, m, op in operations]
    for path, method, op in operations:
        lines += _operation(path, method, op)
    return "".join(lines)


def _op_anchor(method: str, path: str) -> str:
    """The id MkDocs and GitHub both give the heading ``METHOD /path``: punctuation dropped."""
    return re.sub(r"[^\w\s-]", "", f"{method} {path}").strip().lower().replace(" ", "-")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"\n## {method} {path}\n\n",
             f"{prose(op.get('summary'))}. {prose(op.get('description'))}".rstrip(". ") + ".\n\n"]
    params = op.get("parameters", [])
    if params:
        lines.append("| parameter | in | required | description |\n|---|---|---|---|\n")
        lines += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                  f"{prose(p.get('description'))} |\n" for p in params]
        lines.append("\n")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines.append(f"Body: `{media}`, {_schema_name(content.get('schema', {}))}.\n\n")
    codes = ", ".join(f"{code} ({prose(r.get('description'))})"
                      for code, r in op.get("responses", {}).items())
    lines.append(f"Responses: {codes}.\n")
    return lines


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return "`" + schema["$ref"].rsplit("/", 1)[-1] + "`"
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return " or ".join(_schema_name(s) for s in options)
    return f"`{schema.get('type', 'object')}`"
