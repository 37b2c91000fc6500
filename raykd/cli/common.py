"""What every ``raykd`` command shares: reading a spec with ``--set`` overrides, and
:func:`guarded`, which turns a user error into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Annotated, Any

import typer

from raykd.core.errors import user_message

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130  # 128 + SIGINT, as a shell reports Ctrl+C


def guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; user errors become one line on stderr and exit code 2, Ctrl+C (or SIGTERM)
    one ``cancelled`` line and exit code 130. These reach the terminal also when Ray's output
    went to a job's log file, and then name that file too."""
    from raykd import console

    console.forget_ray_log()
    try:
        return fn()
    except KeyboardInterrupt:
        log = console.ray_log()
        typer.echo("cancelled" + (f"; Ray's own output: {log}" if log is not None else ""),
                   file=console.err())
        raise typer.Exit(EXIT_CANCELLED) from None
    except Exception as exc:  # noqa: BLE001 - classified below
        message = user_message(exc)
        if message is None or os.environ.get("RAYKD_DEBUG"):
            traceback.print_exc(file=console.err())
        if message is not None:
            typer.echo(f"error: {message}", file=console.err())
        if console.ray_log() is not None:
            typer.echo(f"Ray's own output: {console.ray_log()}", file=console.err())
        raise typer.Exit(1 if message is None else EXIT_USER_ERROR) from None


def override_value(item: str, raw: str) -> Any:
    """The YAML value of one ``--set`` item; SpecError naming the item when it does not parse."""
    from raykd.core.spec import SpecError
    from raykd.core.spec_io import SpecTextError, read_value

    try:
        return read_value(raw)
    except SpecTextError as err:
        raise SpecError(
            f"--set {item!r}: value {raw!r} cannot be used ({err}); accepted: a YAML "
            "value such as 2, 0.5, [64, 32] or {name: mlp}, or text in quotes"
        ) from None


def echo_log(line: str) -> None:
    """Progress lines of a job, on the console's stdout with a ``raykd:`` prefix."""
    from raykd import console

    typer.echo(f"raykd: {line}", file=console.out())


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a spec mapping."""
    from raykd.core.spec import SpecError

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise SpecError(
                    f"--set {item!r}: {part!r} is not a mapping or list index in the spec"
                )
        last = parts[-1]
        value = override_value(item, raw)
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {item!r}: cannot set {last!r} there")
    return data


def read_spec(source: str, overrides: list[str]) -> Any:
    """Load a spec file (or bundled example name), apply overrides, validate."""
    from raykd.core.spec import parse_spec, read_mapping

    return parse_spec(apply_overrides(read_mapping(source), overrides))


SpecArg = Annotated[
    str, typer.Argument(help="A spec file (YAML) or a bundled example name, e.g. mnist-wkd.")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a spec field: KEY=VALUE.")
]
