"""``raykd bench quality``: can a student exceed its teacher ensemble? (ROaD's table, on real data)

For each dataset: three teachers of one architecture, trained by raykd's teacher stage
with seeds 1, 2, 3 (:func:`raykd.engine.teacher_stage.run_teachers`: trained once, then reused from
``<out>/cache/teachers``; their logits are cached under ``<out>/cache``). Their frozen
logits are computed once and shared by every run. Then, per scenario (``same-size``: the
teachers' architecture; ``large-to-small``: a smaller one), the rows of
:data:`raykd.bench.quality_runs.ROWS` -- the student alone, KD, teacher annealing,
born-again (generation 2 taught by the KD student via KD) and WKD at W = 0.5, 0.75, 0.9 --
each with its T and alpha picked on the validation split by the same small grid (one
seed, fewer epochs), then trained with several seeds; seed k is shared by all rows, so
rows are compared per seed. Every run keeps its best-validation epoch, saved under
``<out>/checkpoints/<dataset>/<scenario>/<row>/seed<k>.safetensors``.

Outputs in ``out``: ``quality.md`` (tables and the verdict in words), ``quality.json``
(every number, per seed), ``quality_<dataset>.png`` (each row minus the ensemble, with std bars)
and ``teachers/<dataset>/{val,test}_logits.npy`` (the teachers' (M, N, C) logits).

The full run (MNIST and ggplot2's diamonds, 306 student runs) needs roughly 45 CPU-minutes
of student training: ~25 minutes on two idle cores; it took 63 minutes on a shared
machine whose load average stayed at 9-20. ``--quick`` (scikit-learn's digits, 2 seeds, a
2-point grid) takes 1-3 minutes. :func:`raykd.bench.quality_report.render` rebuilds the
tables and charts from ``quality.json`` without training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from raykd.bench import BenchOptionError
from raykd.bench.quality_report import markdown, plot_dataset, summarize, verdict
from raykd.bench.quality_runs import ROWS, Grid
from raykd.bench.quality_tasks import Scenario, ScenarioRefs, collect, submit_scenario
from raykd.core.spec import parse_spec
from raykd.data import load_dataset
from raykd.engine import Job, ensemble_accuracy, ensure_ray, put_splits, run_teachers
from raykd.teachers.cache import LogitCache
from raykd.train.steps import accuracy

Log = Callable[[str], None]
TEACHER_SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class DatasetPlan:
    """What the bench runs on one dataset.

    Attributes:
        dataset: A built-in dataset (``raykd.data.DATASETS``).
        teacher: The teachers' ModelSpec mapping (the same-size student's too).
        students: ``(scenario, ModelSpec mapping)`` per scenario.
        train: TrainSpec fields (no seed) of teachers and students alike.
        sweep_epochs: Epochs of a sweep trial.
        seeds: Final runs per row (seeds 0..seeds-1).
    """

    dataset: str
    teacher: dict[str, Any]
    students: tuple[tuple[str, dict[str, Any]], ...]
    train: dict[str, Any]
    sweep_epochs: int
    seeds: int
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    teacher_seeds: tuple[int, ...] = TEACHER_SEEDS
    sweep_seed: int = 1000


def _mlp(*hidden: int) -> dict[str, Any]:
    return {"name": "mlp", "hidden": list(hidden)}


FULL_PLANS: tuple[DatasetPlan, ...] = (
    DatasetPlan(
        "mnist",
        teacher={"name": "cnn", "width": 8},
        students=(("same-size", {"name": "cnn", "width": 8}), ("large-to-small", _mlp(32))),
        train={"epochs": 3, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0},
        sweep_epochs=1,
        seeds=5,
    ),
    DatasetPlan(
        "diamonds",
        teacher=_mlp(64, 64),
        students=(("same-size", _mlp(64, 64)), ("large-to-small", _mlp(16))),
        train={"epochs": 15, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.0},
        sweep_epochs=5,
        seeds=10,
    ),
)
"""The full benchmark: MNIST (images, near-perfect teachers) and diamonds (tabular, imperfect)."""

FULL_GRID = Grid()

QUICK_PLANS: tuple[DatasetPlan, ...] = (
    DatasetPlan(
        "digits",
        teacher=_mlp(32),
        students=(("same-size", _mlp(32)), ("large-to-small", _mlp(8))),
        train={"epochs": 8, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0},
        sweep_epochs=2,
        seeds=2,
    ),
)
"""``--quick``: a smoke check on scikit-learn's digits (1,797 8x8 images; imperfect teachers)."""

QUICK_GRID = Grid(temperatures=(2.0, 4.0), alphas=(0.9,), annealing_temperatures=(2.0, 4.0))


@dataclass
class Prepared:
    """One dataset, loaded and in the object store, with its teachers' logits."""

    plan: DatasetPlan
    data: Any
    refs: dict[str, Any]
    teacher_ref: Any
    teachers: dict[str, Any]
    scenarios: dict[str, ScenarioRefs] = field(default_factory=dict)
    seeds: int = 0


def _teacher_spec(plan: DatasetPlan, out: Path) -> Any:
    return parse_spec(
        {
            "name": f"bench-quality-{plan.dataset}",
            "data": {
                "dataset": plan.dataset,
                "val_fraction": plan.val_fraction,
                "test_fraction": plan.test_fraction,
                "seed": 0,
            },
            "teachers": [{"model": plan.teacher, "seed": s} for s in plan.teacher_seeds],
            "teacher_train": plan.train,
            "student": {"model": plan.teacher},
            "methods": [{"method": "kd"}],
            "storage": str(out),
        }
    )


def disagreement(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Shares of examples where some but not all teachers are wrong, and where all are.

    ``logits`` is (M, N, C). WKD changes the soft target only on the first kind (and
    falls back to the plain average on the second): METHOD.md section 6.
    """
    wrong = (logits.argmax(-1) != y[None]).sum(0)
    m = logits.shape[0]
    return {
        "some_wrong": float(((wrong > 0) & (wrong < m)).mean()),
        "all_wrong": float((wrong == m).mean()),
    }


def teacher_summary(plan: DatasetPlan, logits: dict[str, np.ndarray], data: Any,
                    checkpoints: list[str]) -> dict[str, Any]:
    """The teachers' accuracies, their ensemble's, and how often they disagree."""
    return {
        "model": plan.teacher, "seeds": list(plan.teacher_seeds), "train": plan.train,
        "checkpoints": checkpoints,
        "val_accuracy": [accuracy(z, data.val.y) for z in logits["val"]],
        "test_accuracy": [accuracy(z, data.test.y) for z in logits["test"]],
        "ensemble": {"val_accuracy": ensemble_accuracy(logits["val"], data.val.y),
                     "test_accuracy": ensemble_accuracy(logits["test"], data.test.y)},
        "disagreement": {"train": disagreement(logits["train"], data.train.y),
                         "test": disagreement(logits["test"], data.test.y)},
    }


def prepare(plan: DatasetPlan, out: Path, log: Log) -> Prepared:
    """Load the data, put it in the object store, train (or reuse) the teachers, save logits."""
    import ray

    start = time.perf_counter()
    data = load_dataset(plan.dataset, val_fraction=plan.val_fraction,
                        test_fraction=plan.test_fraction, seed=0)
    log(f"{plan.dataset}: train {len(data.train)} / val {len(data.val)} / "
        f"test {len(data.test)}, {data.num_classes} classes")
    refs = put_splits(data)
    teacher_dir = out / "teachers" / plan.dataset
    job = Job(spec=_teacher_spec(plan, out), job_dir=teacher_dir,
              log=lambda line: log(f"{plan.dataset}: {line}"))
    logits = run_teachers(job, data, LogitCache(out / "cache"), refs).logits
    checkpoints = [t["checkpoint"] for t in job.result["teachers"]]
    teachers = teacher_summary(plan, logits, data, checkpoints)
    teachers["logits"] = {}
    for split in ("val", "test"):
        teachers["logits"][split] = str(teacher_dir / f"{split}_logits.npy")
        np.save(teachers["logits"][split], logits[split], allow_pickle=False)
    teachers["seconds"] = time.perf_counter() - start
    return Prepared(plan=plan, data=data, refs=refs, teacher_ref=ray.put(logits["train"]),
                    teachers=teachers)


def submit(prep: Prepared, grid: Grid, seeds: int, out: Path) -> None:
    """Submit every scenario's runs of one dataset (they start as CPUs free up)."""
    plan, data = prep.plan, prep.data
    prep.seeds = seeds
    for name, model in plan.students:
        sc = Scenario(
            dataset=plan.dataset,
            name=name,
            student=model,
            input_shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            train=plan.train,
            sweep_epochs=plan.sweep_epochs,
            seeds=tuple(range(seeds)),
            sweep_seed=plan.sweep_seed,
            out=out,
        )
        prep.scenarios[name] = submit_scenario(sc, grid, prep.refs, prep.teacher_ref, ROWS)


def assemble(prep: Prepared, out: Path) -> dict[str, Any]:
    """One dataset's section of ``quality.json`` (runs finished)."""
    data, plan = prep.data, prep.plan
    ens = prep.teachers["ensemble"]["test_accuracy"]
    scenarios = {}
    for name, model in plan.students:
        got = collect(prep.scenarios[name])
        summary = summarize(got["finals"], ens)
        title = f"{plan.dataset}, {name} ({model['name']} student)"
        scenarios[name] = {
            "student": model,
            **got,
            "summary": summary,
            "sentence": verdict(title, summary, ens),
        }
    section: dict[str, Any] = {
        "data": {
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "fingerprints": {s: getattr(data, s).fingerprint for s in ("train", "val", "test")},
        },
        "plan": asdict(plan),
        "seeds": prep.seeds,
        "teachers": prep.teachers,
        "scenarios": scenarios,
        "plot": f"quality_{plan.dataset}.png",
    }
    plot_dataset(plan.dataset, section, out / section["plot"])
    return section


def wait_all(refs: list[Any], log: Log, every_s: float = 30.0) -> None:
    """Block until every run is done, logging each finished run and an ETA now and then."""
    import ray

    pending, done, start, last = list(refs), 0, time.perf_counter(), 0.0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        result = ray.get(ready[0])
        done += 1
        elapsed = time.perf_counter() - start
        if not result["sweep"] or elapsed - last > every_s or not pending:
            last = elapsed
            eta = elapsed / done * len(pending)
            log(
                f"{result['dataset']}/{result['scenario']}/{'sweep ' if result['sweep'] else ''}"
                f"{result['row']} seed {result['seed']}: val {result['val_accuracy']:.4f} "
                f"test {result['test_accuracy']:.4f} ({done}/{done + len(pending)} runs, "
                f"{elapsed / 60:.1f} min, ~{eta / 60:.1f} min left)"
            )


def check_seeds(seeds: int | None, *, minimum: int = 1, advice: str = "5 or more for the table"
                ) -> int | None:
    """``--seeds``: None (each plan's number) or an integer >= ``minimum``; else a user error."""
    bad = isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < minimum
    if seeds is not None and bad:
        raise BenchOptionError(
            f"--seeds={seeds!r} is invalid; expected an integer >= {minimum} ({advice})"
        )
    return seeds


def run_quality_bench(out: Path, quick: bool = False, seeds: int | None = None, *,
                      plans: tuple[DatasetPlan, ...] | None = None, grid: Grid | None = None,
                      log: Log | None = None) -> dict[str, Any]:
    """Run the quality benchmark; write ``quality.md``, ``quality.json`` and charts to ``out``.

    Args:
        out: Output directory (created).
        quick: The smoke-check size (:data:`QUICK_PLANS`, :data:`QUICK_GRID`).
        seeds: Final runs per row, overriding each plan's number.
        plans: Datasets to run instead of the default ones.
        grid: The validation grid instead of the default one.
        log: Where progress lines go (default: print).

    Returns:
        The content of ``quality.json``.
    """
    seeds = check_seeds(seeds)
    log = log or (lambda line: print(f"raykd bench quality: {line}", flush=True))
    plans = plans or (QUICK_PLANS if quick else FULL_PLANS)
    grid = grid or (QUICK_GRID if quick else FULL_GRID)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, stamp = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    datasets = run_datasets(plans, grid, seeds, out, log)
    result: dict[str, Any] = {
        "quick": quick, "seeds": {p.dataset: seeds or p.seeds for p in plans},
        "grid": asdict(grid),
        "started": stamp, "wall_seconds": time.perf_counter() - start, "datasets": datasets,
        "sentences": [sc["sentence"] for d in datasets.values() for sc in d["scenarios"].values()],
    }
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    (out / "quality.md").write_text(markdown(result))
    for sentence in result["sentences"]:
        log(sentence)
    minutes = result["wall_seconds"] / 60
    log(f"wrote {out / 'quality.md'}, quality.json and the charts in {minutes:.1f} min")
    return result


def run_datasets(plans: tuple[DatasetPlan, ...], grid: Grid, seeds: int | None, out: Path,
                 log: Log) -> dict[str, Any]:
    """Teachers of every dataset first, then all student runs at once; their sections."""
    import ray

    started_ray = not ray.is_initialized()
    ensure_ray()
    try:
        prepared = [prepare(plan, out, log) for plan in plans]
        for prep in prepared:
            submit(prep, grid, seeds or prep.plan.seeds, out)
        wait_all([r for p in prepared for sc in p.scenarios.values() for r in sc.runs()], log)
        return {p.plan.dataset: assemble(p, out) for p in prepared}
    finally:
        if started_ray:
            ray.shutdown()
