"""``cli.md``: every ``raykd`` command with its arguments and options."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from raykd.cli import app
from raykd.docs_gen.words import HEADER, prose, type_name, value_words

__all__ = ["cli_reference"]


def cli_reference() -> str:
    """docs/reference/cli.md: every ``raykd`` command with its arguments and options."""
    import typer.main

    lines = [HEADER.format(source="raykd/cli (typer)"), "# Command line\n\n",
             "Every command of `raykd` (`raykd COMMAND --help` prints the same). Bad input ends "
             "with one line on stderr and exit code 2.\n"]
    for path, command in _commands(typer.main.get_command(app), ["raykd"]):
        lines += _command_section(path, command)
    return "".join(lines)


def _commands(group: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    for name, command in getattr(group, "commands", {}).items():
        if getattr(command, "hidden", False):
            continue
        if getattr(command, "commands", None) is not None:
            yield from _commands(command, [*path, name])
        else:
            yield [*path, name], command


def _command_section(path: list[str], command: Any) -> list[str]:
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = " ".join(p.name.upper() if p.required else f"[{p.name.upper()}]"
                         for p in params if not p.opts[0].startswith("-"))
    usage = " ".join([*path, "[OPTIONS]", arguments]).rstrip()
    lines = [f"\n## {' '.join(path)}\n\n", f"`{usage}`\n\n", prose(command.help) + "\n\n"]
    if params:
        lines.append("| argument or option | type | default | description |\n|---|---|---|---|\n")
        for p in params:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            if not p.opts[0].startswith("-"):
                names = f"`{p.name.upper()}`" + ("" if p.required else " (optional)")
            lines.append(f"| {names} | {_param_type(p)} | {_param_default(p)} | "
                         f"{prose(getattr(p, 'help', None)) or ' '} |\n")
    return lines


def _param_type(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        name = type_name(descriptor.annotation)
    else:
        name = getattr(getattr(param, "type", None), "name", "") or "value"
    return f"{name}, repeatable" if getattr(param, "multiple", False) else name


def _param_default(param: Any) -> str:
    if param.required:
        return "**required**"
    value = param.default
    if value is None or value == () or value == [] or callable(value):
        return " "
    if getattr(param, "is_flag", False):
        return f"`{param.opts[0] if value else (param.secondary_opts or ['off'])[0]}`"
    return f"`{value_words(value)}`"
