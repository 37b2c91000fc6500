"""``raykd bench ...``: the speed, quality, sweep and API benchmarks."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from raykd.cli.common import SetOpt, SpecArg, echo_log, guarded, read_spec

bench_app = typer.Typer(no_args_is_help=True, help="Speed and quality benchmarks.")

OutOpt = Annotated[Path, typer.Option(help="Directory for the tables and plots.")]
StepsOpt = Annotated[int | None, typer.Option(help="Training steps per row.")]
QuickOpt = Annotated[bool, typer.Option(help="A small, fast version (smoke check).")]


class TextScenario(StrEnum):
    """``--text-scenario`` (``raykd.bench.span_quality.TEXT_SCENARIOS``)."""

    BBC_NEWS = "bbc-news"
    BBC_SPEAKERS = "bbc-speakers"
    ALL = "all"


ResultsOpt = Annotated[Path | None, typer.Option(
    help="Also copy the tables here (e.g. raykd/bench/results).")]


@bench_app.command("speed")
def bench_speed(out: OutOpt = Path("raykd-runs/bench-speed"), quick: QuickOpt = False,
                steps: StepsOpt = None,
                rounds: Annotated[int | None, typer.Option(
                    help="Interleaved rounds per row; medians reported (default 3, quick 2)."
                )] = None) -> None:
    """Throughput of raykd against the student alone and plain PyTorch KD loops."""
    from raykd.bench.speed import run_speed_bench

    guarded(lambda: run_speed_bench(out=out, quick=quick, steps=steps, rounds=rounds))


@bench_app.command("text-speed")
def bench_text_speed(out: OutOpt = Path("raykd-runs/bench-text-speed"), quick: QuickOpt = False,
                     rounds: Annotated[int | None, typer.Option(
                         help="Interleaved rounds after a warm-up; medians reported (default 3, "
                              "quick 1).")] = None,
                     results: ResultsOpt = None) -> None:
    """Text: a raykd teacher actor and student loop against plain PyTorch/HF loops (ratios)."""
    from raykd.bench.text_speed import run_text_speed

    guarded(lambda: run_text_speed(out=out, quick=quick, rounds=rounds, results=results))


@bench_app.command("sweep")
def bench_sweep(spec: SpecArg = "mnist-sweep", out: OutOpt = Path("raykd-runs/bench-sweep"),
                set_: SetOpt = None,
                rounds: Annotated[int, typer.Option(
                    min=1, help="Rounds of the shared (and naive) sweeps, interleaved; medians "
                                "reported.")] = 3,
                results: ResultsOpt = None,
                naive: Annotated[bool, typer.Option(
                    help="Also run the naive sweep (teachers in every trial); --no-naive "
                         "measures Tune's overhead alone, in about a third of the time.")] = True,
                ) -> None:
    """Sweep wall time with shared teacher logits against each trial running its teachers,
    and Tune's overhead (wall - one teacher pass - the trials' training / trials at once)."""
    from raykd.bench.sweep import run_sweep_bench

    guarded(lambda: run_sweep_bench(read_spec(spec, set_ or []), out=out, log=echo_log,
                                    rounds=rounds, results=results, naive=naive))


@bench_app.command("quality")
def bench_quality(out: OutOpt = Path("raykd-runs/bench-quality"), quick: QuickOpt = False,
                  seeds: Annotated[int | None, typer.Option(help="Seeds per row.")] = None,
                  text: Annotated[bool, typer.Option(
                      help="The text scenarios instead: MiniLM teachers, none/KD/WKD students on "
                           "BBC News (text_quality.md) or bbc-speakers (span_quality.md).")
                  ] = False,
                  text_scenario: Annotated[TextScenario, typer.Option(
                      help="With --text: which scenario to run. bbc-news (the default, "
                           "text_quality.md) took ~30 min on 2 shared CPUs; bbc-speakers "
                           "(span_quality.md) takes ~60 min more: --text-scenario bbc-speakers, "
                           "or all for both in turn."
                  )] = TextScenario.BBC_NEWS,
                  results: ResultsOpt = None) -> None:
    """Accuracy of every method against the ensemble (can a student exceed its teachers?)."""
    if text:
        from raykd.bench.span_quality import run_text_scenarios

        guarded(lambda: run_text_scenarios(out=out, quick=quick, seeds=seeds, results=results,
                                           scenario=text_scenario.value))
        return
    from raykd.bench.quality import run_quality_bench

    guarded(lambda: run_quality_bench(out=out, quick=quick, seeds=seeds))


@bench_app.command("wkd")
def bench_wkd(out: OutOpt = Path("raykd-runs/bench-wkd"), quick: QuickOpt = False,
              seeds: Annotated[int | None, typer.Option(
                  help="Student seeds per row (default 6; quick 3).")] = None,
              results: Annotated[Path | None, typer.Option(
                  help="Also copy wkd.md, wkd.json and the charts here "
                       "(e.g. raykd/bench/results).")] = None) -> None:
    """Where Weighted KD helps: W curves for equal and unequal ensembles, paired by seed."""
    from raykd.bench.wkd import run_wkd_bench

    guarded(lambda: run_wkd_bench(out=out, quick=quick, seeds=seeds, results=results))



@bench_app.command("api")
def bench_api(out: OutOpt = Path("raykd-runs/bench-api"),
              jobs: Annotated[int, typer.Option(help="Jobs inserted before measuring.")] = 1000,
              clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 50,
              rounds: Annotated[int, typer.Option(help="Rounds over the three endpoints.")] = 3,
              requests: Annotated[int, typer.Option(
                  help="Measured requests per endpoint, server and round.")] = 1000,
              quick: Annotated[bool, typer.Option(
                  "--quick", help="A few seconds' run (for tests): 40 jobs, 8 clients, 1 round "
                  "of 60 requests; the other options are ignored.")] = False) -> None:
    """Latency and throughput of the REST API (a real server, paused queue, SQLite) beside
    the yardstick: a minimal FastAPI app answering the same JSON from the same database."""
    from raykd.bench.api import run_api_bench

    guarded(lambda: run_api_bench(out=out, jobs=jobs, clients=clients, rounds=rounds,
                                  requests=requests, quick=quick))

