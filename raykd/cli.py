"""The ``raykd`` command line: ``run`` is the one entrypoint for every way in.

``raykd run SPEC`` runs locally (starting a local Ray) or, with RAY_ADDRESS set, on a
cluster; ``ray job submit -- raykd run spec.yaml`` and a KubeRay RayJob call exactly it.
Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
bench_app = typer.Typer(no_args_is_help=True, help="Speed and quality benchmarks.")
app.add_typer(bench_app, name="bench")

EXIT_USER_ERROR = 2


def guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; user errors become one line on stderr and exit code 2."""
    from raykd.errors import user_message

    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below
        message = user_message(exc)
        if message is None or os.environ.get("RAYKD_DEBUG"):
            traceback.print_exc()
            if message is None:
                raise typer.Exit(1) from None
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def override_value(item: str, raw: str) -> Any:
    """The YAML value of one ``--set`` item; SpecError naming the item when it does not parse."""
    from raykd.spec import SpecError

    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(
            f"--set {item!r}: value {raw!r} is not valid YAML ({problem}); accepted: a YAML "
            "value such as 2, 0.5, [64, 32] or {name: mlp}, or text in quotes"
        ) from None


def echo_log(line: str) -> None:
    """Progress lines of a job, on stdout with a ``raykd:`` prefix."""
    typer.echo(f"raykd: {line}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a spec mapping."""
    from raykd.spec import SpecError

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
    from raykd.spec import parse_spec, read_mapping

    return parse_spec(apply_overrides(read_mapping(source), overrides))


SpecArg = Annotated[
    str, typer.Argument(help="A spec file (YAML) or a bundled example name, e.g. mnist-wkd.")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a spec field: KEY=VALUE.")
]
SweepDirOpt = Annotated[Path | None, typer.Option(help="Output directory of this sweep.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print result.json at the end.")]


JobIdOpt = Annotated[str | None, typer.Option(
    help="The job's id: its directory is <storage>/<id>. Running an id again with the same spec "
         "resumes it; another spec under that id is refused. Default: a new id.")]
JobDirOpt = Annotated[Path | None, typer.Option(help="The job's directory (instead of <storage>/<id>).")]


def _terminate_on_sigterm() -> None:
    """``ray job stop`` and ``kill`` send SIGTERM: end like Ctrl+C, so a 'cancelled' event is written."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@app.command()
def run(spec: SpecArg, set_: SetOpt = None, job_id: JobIdOpt = None, job_dir: JobDirOpt = None,
        json_out: JsonOpt = False) -> None:
    """Run (or resume) a distillation job (local Ray, or the cluster in RAY_ADDRESS)."""
    from raykd.report import EventPrinter, print_result

    def go() -> None:
        from raykd.engine import run_job

        job = read_spec(spec, set_ or [])
        _terminate_on_sigterm()
        if job.sweep is not None:
            from raykd.tune import print_sweep, run_sweep

            print_sweep(run_sweep(job, job_dir=job_dir, log=echo_log))
            return

        def follow(opened: Any) -> Any:
            seen = opened.earlier[-1].seq if opened.earlier else 0
            return EventPrinter(opened.sink.path, after=seen, write=echo_log)

        result = run_job(job, job_id=job_id, job_dir=job_dir, log=lambda _: None, console=follow)
        print_result(result)
        if json_out:
            typer.echo(json.dumps(result, indent=2))

    guarded(go)


@app.command()
def sweep(spec: SpecArg, set_: SetOpt = None,
          job_dir: SweepDirOpt = None) -> None:
    """Run a Ray Tune sweep over W, T, alpha and the method (the spec's sweep section)."""

    def go() -> None:
        from raykd.tune import print_sweep, run_sweep

        job = read_spec(spec, set_ or [])
        print_sweep(run_sweep(job, job_dir=job_dir, log=echo_log))

    guarded(go)


OutOpt = Annotated[Path, typer.Option(help="Directory for the tables and plots.")]
StepsOpt = Annotated[int | None, typer.Option(help="Training steps per row.")]
QuickOpt = Annotated[bool, typer.Option(help="A small, fast version (smoke check).")]


@bench_app.command("speed")
def bench_speed(out: OutOpt = Path("raykd-runs/bench-speed"), quick: QuickOpt = False,
                steps: StepsOpt = None) -> None:
    """Throughput of raykd against the student alone and a plain PyTorch KD loop."""
    from raykd.bench.speed import run_speed_bench

    guarded(lambda: run_speed_bench(out=out, quick=quick, steps=steps))


@bench_app.command("sweep")
def bench_sweep(spec: SpecArg = "mnist-sweep", out: OutOpt = Path("raykd-runs/bench-sweep"),
                set_: SetOpt = None) -> None:
    """Sweep wall time with shared teacher logits against each trial running its teachers."""
    from raykd.tune.bench import run_sweep_bench

    guarded(lambda: run_sweep_bench(read_spec(spec, set_ or []), out=out, log=echo_log))


@bench_app.command("quality")
def bench_quality(out: OutOpt = Path("raykd-runs/bench-quality"), quick: QuickOpt = False,
                  seeds: Annotated[int | None, typer.Option(help="Seeds per row.")] = None) -> None:
    """Accuracy of every method against the ensemble (can a student exceed its teachers?)."""
    from raykd.bench.quality import run_quality_bench

    guarded(lambda: run_quality_bench(out=out, quick=quick, seeds=seeds))


@app.command()
def validate(spec: SpecArg, set_: SetOpt = None) -> None:
    """Check a spec without running it; print the normalized spec."""
    guarded(lambda: typer.echo(read_spec(spec, set_ or []).model_dump_json(indent=2)))


@app.command()
def examples() -> None:
    """List the bundled example specs."""
    from raykd.spec import example_names, example_path

    for name in example_names():
        first = example_path(name).read_text().splitlines()[0].lstrip("# ")
        typer.echo(f"{name:24s} {first}")


def main() -> None:
    """Console entry point."""
    app(prog_name="raykd")


if __name__ == "__main__":
    sys.exit(main())
