"""Commands that work on a spec in this process: ``run`` (the one entrypoint for every way
in), ``sweep``, ``validate`` and ``examples``. Ray is local, or the cluster in RAY_ADDRESS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from raykd.cli.common import SetOpt, SpecArg, echo_log, guarded, read_spec

local_app = typer.Typer()

SweepDirOpt = Annotated[Path | None, typer.Option(help="Output directory of this sweep.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print result.json at the end.")]


JobIdOpt = Annotated[str | None, typer.Option(
    help="The job's id: its directory is <storage>/<id>. Running an id again with the same spec "
         "resumes it; another spec under that id is refused. Default: a new id.")]
JobDirOpt = Annotated[Path | None, typer.Option(
    help="The job's directory (instead of <storage>/<id>).")]


def _terminate_on_sigterm() -> None:
    """``ray job stop`` and ``kill`` send SIGTERM: end like Ctrl+C (a 'cancelled' event)."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@local_app.command()
def run(spec: SpecArg, set_: SetOpt = None, job_id: JobIdOpt = None, job_dir: JobDirOpt = None,
        json_out: JsonOpt = False) -> None:
    """Run (or resume) a distillation job (local Ray, or the cluster in RAY_ADDRESS)."""
    from raykd import console
    from raykd.console_text import print_result

    def go() -> None:
        from raykd.cli.job_console import job_console
        from raykd.engine import run_job

        job = read_spec(spec, set_ or [])
        _terminate_on_sigterm()
        if job.sweep is not None:
            from raykd.tune import print_sweep, run_sweep

            print_sweep(run_sweep(job, job_id=job_id, job_dir=job_dir, log=echo_log,
                                  on_open=console.divert_to_job), file=console.out())
            return

        result = run_job(job, job_id=job_id, job_dir=job_dir, log=lambda _: None,
                         console=job_console)
        print_result(result, file=console.out())
        if json_out:
            typer.echo(json.dumps(result, indent=2), file=console.out())

    guarded(go)


@local_app.command()
def sweep(spec: SpecArg, set_: SetOpt = None,
          job_dir: SweepDirOpt = None) -> None:
    """Run a Ray Tune sweep over W, T, alpha and the method (the spec's sweep section)."""

    from raykd import console

    def go() -> None:
        from raykd.tune import print_sweep, run_sweep

        job = read_spec(spec, set_ or [])
        _terminate_on_sigterm()  # as raykd run: a 'cancelled' event, the terminal restored
        print_sweep(run_sweep(job, job_dir=job_dir, log=echo_log, on_open=console.divert_to_job),
                    file=console.out())

    guarded(go)



@local_app.command()
def validate(spec: SpecArg, set_: SetOpt = None) -> None:
    """Check a spec without running it; print the normalized spec."""
    guarded(lambda: typer.echo(read_spec(spec, set_ or []).model_dump_json(indent=2)))


@local_app.command()
def examples() -> None:
    """List the bundled example specs."""
    from raykd.core.spec import example_names, example_path

    for name in example_names():
        first = example_path(name).read_text().splitlines()[0].lstrip("# ")
        typer.echo(f"{name:24s} {first}")

