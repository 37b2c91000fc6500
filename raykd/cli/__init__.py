"""The ``raykd`` command line: ``run`` is the one entrypoint for every way in.

``raykd run SPEC`` runs locally (starting a local Ray) or, with RAY_ADDRESS set, on a
cluster; ``ray job submit -- raykd run spec.yaml`` and a KubeRay RayJob call exactly it.
Bad input ends with one line on stderr and exit code 2.

The commands live beside this module: :mod:`raykd.cli.local` (run, sweep, validate,
examples), :mod:`raykd.cli.control` (serve and the service's client commands) and
:mod:`raykd.cli.bench` (``raykd bench ...``), :mod:`raykd.cli.artifacts` (predict, export);
:mod:`raykd.cli.common` holds what they share.
"""

from __future__ import annotations

import typer

from raykd.cli.artifacts import artifacts_app
from raykd.cli.bench import bench_app
from raykd.cli.common import EXIT_USER_ERROR, apply_overrides, guarded, read_spec
from raykd.cli.control import control_app
from raykd.cli.local import local_app

__all__ = ["EXIT_USER_ERROR", "app", "apply_overrides", "bench_app", "guarded", "main", "read_spec"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
app.add_typer(local_app)  # no name: the commands are raykd's own (raykd run, raykd submit, ...)
app.add_typer(control_app)
app.add_typer(artifacts_app)  # raykd predict, raykd export
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console entry point (Ray, imported later, prints plain prefixes and every line)."""
    from raykd.console import quiet_ray_env

    quiet_ray_env()
    app(prog_name="raykd")
