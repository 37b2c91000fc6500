"""The control plane on the command line: ``raykd serve`` and its client commands
(submit, jobs, status, logs, watch, cancel, download), which talk to the service over REST.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from raykd.cli.common import SetOpt, SpecArg, echo_log, guarded, read_spec
from raykd.core.errors import UserError

control_app = typer.Typer()

UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="The service's URL; default $RAYKD_URL or http://127.0.0.1:8000.",
    show_default=False)]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", help="Bearer token; default $RAYKD_TOKEN (prefer the variable: command lines "
                    "are visible to other users).", show_default=False)]
IdArg = Annotated[str, typer.Argument(help="The job's id.")]
LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", help="A label KEY=VALUE (repeatable).", show_default=False)]


def make_client(url: str | None, token: str | None) -> Any:
    """A :class:`raykd.client.RaykdClient` from the options (or RAYKD_URL / RAYKD_TOKEN)."""
    from raykd.client import RaykdClient

    return RaykdClient(url, token)


def parse_labels(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` as a mapping; UserError naming a malformed item."""
    labels = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--label {item!r}: expected KEY=VALUE, e.g. team=vision")
        labels[key] = value
    return labels


def age(seconds: float) -> str:
    """A short age: 42s, 5m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def job_line(job: Any) -> str:
    """One line for a job: id, state, and where it is."""
    where = f", position {job.queue_position}" if job.queue_position else ""
    where += f", stage {job.stage}" if job.stage else ""
    why = f": {job.error}" if job.error and job.error != job.state else ""
    return f"job {job.id} ({job.name}): {job.state}{where}{why}"


def watch_job(client: Any, job_id: str) -> int:
    """Print the job's events as they come; 0 when it succeeded, 1 when it failed or stopped."""
    from raykd.console_text import event_line

    for event in client.events(job_id):
        line = event_line(event)
        if line:
            echo_log(line)
    job = client.get(job_id)
    echo_log(job_line(job))
    return 0 if job.state == "succeeded" else 1


@control_app.command()
def serve(host: Annotated[str | None, typer.Option(help="Bind address (default RAYKD_HOST or "
                                                   "127.0.0.1).", show_default=False)] = None,
          port: Annotated[int | None, typer.Option(help="Bind port (default RAYKD_PORT or 8000).",
                                                   show_default=False)] = None,
          env_file: Annotated[Path | None, typer.Option(
              help="A settings file of RAYKD_*=value lines (default RAYKD_ENV_FILE); the "
                   "environment overrides it.", show_default=False)] = None) -> None:
    """Run the control plane (REST API and dashboard) that queues jobs and runs them on Ray."""

    def go() -> None:
        from pydantic import ValidationError

        from raykd.service.app import run_server
        from raykd.service.settings import Settings

        overrides: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        path = env_file or (Path(os.environ["RAYKD_ENV_FILE"]) if os.environ.get("RAYKD_ENV_FILE") else None)
        if path is not None:
            if not path.is_file():
                raise UserError(f"settings file {str(path)!r} does not exist (give a file of "
                                "RAYKD_*=value lines, or leave --env-file out)")
            overrides["_env_file"] = path
        try:
            settings = Settings(**overrides)
        except ValidationError as err:
            problems = "; ".join(f"RAYKD_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                                 for e in err.errors())
            raise UserError(f"invalid service settings: {problems}") from None
        run_server(settings)

    guarded(go)


@control_app.command()
def submit(spec: SpecArg, set_: SetOpt = None,
           name: Annotated[str | None, typer.Option(help="Display name (default: the spec's).",
                                                    show_default=False)] = None,
           priority: Annotated[int, typer.Option(help="-100..100; higher runs first.")] = 0,
           label: LabelOpt = None,
           job_id: Annotated[str | None, typer.Option(
               help="Your id for the job: submitting it again returns the same job.",
               show_default=False)] = None,
           watch: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
           url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Submit a job to the service (the spec is validated here first); prints its id."""

    def go() -> int:
        job = read_spec(spec, set_ or [])
        labels = parse_labels(label)
        with make_client(url, token) as client:
            created = client.submit(job, name=name, priority=priority, labels=labels,
                                    job_id=job_id)
            typer.echo(created.id)
            typer.echo(job_line(created), err=True)
            return watch_job(client, created.id) if watch else 0

    code = guarded(go)
    if code:
        raise typer.Exit(code)


@control_app.command()
def jobs(state: Annotated[str | None, typer.Option(
            help="queued, pending, running, succeeded, failed or cancelled.",
            show_default=False)] = None,
         name: Annotated[str | None, typer.Option(help="Only jobs of this name.",
                                                  show_default=False)] = None,
         label: LabelOpt = None,
         limit: Annotated[int, typer.Option(help="Jobs to show (page size with --all).")] = 50,
         all_: Annotated[bool, typer.Option(
             "--all", help="Every matching job, page by page.")] = False,
         url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List jobs, newest first."""
    import time

    from rich.table import Table

    def go() -> None:
        with make_client(url, token) as client:
            filters = {"state": state, "name": name, "labels": parse_labels(label), "limit": limit}
            found = (list(client.iter_jobs(**filters)) if all_
                     else client.jobs(**filters).items)
        table = Table()
        table.add_column("id", no_wrap=True, min_width=max((len(j.id) for j in found), default=2))
        for col in ("name", "state", "stage", "progress", "queue", "owner", "age"):
            keep = col not in ("name", "stage", "owner")  # these give way on a narrow screen
            right = col in ("progress", "queue", "age")
            table.add_column(col, justify="right" if right else "left", no_wrap=True,
                             min_width=max(len(col), 9 * (col == "state")) if keep else None)
        now = time.time()
        for job in found:
            table.add_row(job.id, job.name, job.state, job.stage or "", f"{job.progress:.0%}",
                          str(job.queue_position or ""), job.owner, age(now - job.created_at))
        print_table(table)

    guarded(go)


def print_table(table: Any) -> None:
    """Print a rich table; whole lines when stdout is not a terminal (pipes, scripts)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        natural = Console(width=10_000).measure(table).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


def status_lines(job: Any) -> list[str]:
    """A readable summary of one job."""
    from datetime import datetime

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds") if t else "-"

    lines = [job_line(job),
             f"kind {job.kind}, owner {job.owner}, priority {job.priority}, "
             f"attempts {job.attempts}, progress {job.progress:.0%}",
             f"created {when(job.created_at)}, started {when(job.started_at)}, "
             f"finished {when(job.finished_at)}"]
    if job.labels:
        lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(job.labels.items())))
    if job.latest_metrics:
        lines.append("latest: " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.4g}'}" for k, v in job.latest_metrics.items()))
    if job.note:
        lines.append(f"note: {job.note}")
    return lines


def result_lines(result: dict[str, Any]) -> list[str]:
    """The result's rows (model, val acc, test acc, seconds), or its JSON when not a run's."""
    from raykd.console_text import result_rows

    try:
        rows = result_rows(result)
    except (KeyError, TypeError, ValueError):
        return ["result: " + json.dumps(result, sort_keys=True)]
    return ["result:"] + [f"  {m:32s} val {v:>6s}  test {t:>6s}  {s:>8s}" for m, v, t, s in rows]


@control_app.command()
def status(job_id: IdArg, json_out: Annotated[bool, typer.Option(
               "--json", help="Print the job as JSON.")] = False,
           url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Show one job: state, stage, progress, latest metrics and (when done) its result."""

    def go() -> None:
        with make_client(url, token) as client:
            job = client.get(job_id)
        if json_out:
            typer.echo(job.model_dump_json(indent=2))
            return
        lines = status_lines(job)
        if job.result:
            lines += result_lines(job.result)
        typer.echo("\n".join(lines))

    guarded(go)


@control_app.command()
def logs(job_id: IdArg,
         follow: Annotated[bool, typer.Option("--follow", "-f",
                                              help="Keep printing until the job ends.")] = False,
         tail: Annotated[int | None, typer.Option(help="Only the last N lines.",
                                                  show_default=False)] = None,
         url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Print the job's driver log."""

    def go() -> None:
        with make_client(url, token) as client:
            if not follow:
                typer.echo(client.logs(job_id, tail=tail), nl=False)
                return
            for line in client.follow_logs(job_id, tail=tail):
                typer.echo(line)

    guarded(go)


@control_app.command()
def watch(job_id: IdArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Follow a job's progress until it ends (exit code 0: succeeded, 1: failed or cancelled)."""

    def go() -> int:
        with make_client(url, token) as client:
            return watch_job(client, job_id)

    code = guarded(go)
    if code:
        raise typer.Exit(code)


@control_app.command()
def cancel(job_id: IdArg, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel a queued or running job."""

    def go() -> None:
        with make_client(url, token) as client:
            typer.echo(job_line(client.cancel(job_id)))

    guarded(go)


@control_app.command()
def download(job_id: IdArg,
             out: Annotated[Path | None, typer.Option(help="Directory to write to (default: "
                                                      "./<id>).", show_default=False)] = None,
             artifact: Annotated[list[str] | None, typer.Option(
                 help="Only this file (a path from the job's artifacts; repeatable).",
                 show_default=False)] = None,
             url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Download a job's files (result.json, events, checkpoints, ...)."""

    def go() -> None:
        dest = out or Path(job_id)
        with make_client(url, token) as client:
            if artifact:
                paths = [client.download(job_id, a, dest / a) for a in artifact]
            else:
                paths = client.download_all(job_id, dest)
        if not paths:
            typer.echo(f"job {job_id} has no artifacts (yet)", err=True)
        for path in paths:
            typer.echo(str(path))

    guarded(go)
