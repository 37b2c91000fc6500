"""The REST API documents itself: every operation, parameter and field in its OpenAPI schema.

The schema is built from the app factory without starting it (no server, no Ray): every
path's parameters, request bodies and responses, and every component schema's
properties, recursively, must carry a description (issue 10: "every field described").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from raykd.service.app import create_app
from raykd.service.settings import Settings

REF = "#/components/schemas/"


def undocumented(schema: dict[str, Any]) -> list[str]:
    """Every operation, parameter, body, response and field of ``schema`` with no description."""
    components = schema.get("components", {}).get("schemas", {})
    missing = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if not (op.get("summary") or op.get("description")):
                missing.append(f"{where}: operation")
            missing += [f"{where}: {p['in']} parameter {p['name']!r}"
                        for p in op.get("parameters", []) if not p.get("description")]
            for media in op.get("requestBody", {}).get("content", {}).values():
                if not described(media.get("schema", {}), components):
                    missing.append(f"{where}: request body")
                missing += [f"{where}: request body{f}" for f in fields(media.get("schema", {}))]
            missing += [f"{where}: response {status}"
                        for status, answer in op.get("responses", {}).items()
                        if not answer.get("description")]
    for name, component in components.items():
        if not component.get("description"):
            missing.append(f"schema {name}")
        missing += [f"schema {name}{f}" for f in fields(component)]
    return missing


def described(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """Whether ``schema`` has a description of its own or refers to a component that has."""
    if schema.get("description"):
        return True
    ref = schema.get("$ref", "")
    return ref.startswith(REF) and bool(components.get(ref.removeprefix(REF), {}).get("description"))


def fields(schema: dict[str, Any]) -> Iterator[str]:
    """The paths (``.a.b``) of the properties without a description, through nested schemas."""
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            yield f".{name}"
        yield from (f".{name}{f}" for f in fields(prop))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from (f"[]{f}" for f in fields(schema[key]))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, []):
            yield from fields(sub)


def test_every_parameter_and_field_of_the_api_is_described(tmp_path: Path) -> None:
    schema = create_app(Settings(token="x" * 32, storage=tmp_path)).openapi()
    missing = undocumented(schema)
    assert not missing, "no description:\n" + "\n".join(missing)
    parameters = {(p["in"], p["name"]) for ops in schema["paths"].values() for op in ops.values()
                  for p in op.get("parameters", [])}
    assert {("header", "idempotency-key"), ("header", "last-event-id"), ("query", "cursor"),
            ("path", "job_id")} <= parameters  # the walk saw the API, not an empty schema
    assert {"JobCreate", "JobSpec", "DataSpec", "ScalingSpec", "CacheSpec", "Problem"} <= set(
        schema["components"]["schemas"])


class Inner(BaseModel):
    """Described."""

    bare: int


class Body(BaseModel):
    """Described."""

    inner: list[Inner]


def test_the_walk_finds_what_is_not_described() -> None:
    app = FastAPI()

    @app.post("/things/{thing}", summary="A route")
    def post(thing: str, body: Body, limit: int = 1) -> None:
        pass

    missing = undocumented(app.openapi())
    for found in ("POST /things/{thing}: path parameter 'thing'",
                  "POST /things/{thing}: query parameter 'limit'",
                  "schema Body.inner", "schema Inner.bare", "schema HTTPValidationError"):
        assert found in missing
