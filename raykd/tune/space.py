"""What a sweep searches and what each trial may hold: pure functions of the spec.

Nothing here starts Ray. ``param_space`` turns a :class:`~raykd.core.spec.SweepSpec` into a
Tune search space over the method and its hyperparameters (W = ``incorrect_weight``,
T = ``temperature``, ``alpha``); ``plan_resources`` decides how many CPUs (and GPUs) a
trial reserves and how many trials run at once, so that trials plus their workers never
ask for more than the cluster has (a 2-CPU machine must not deadlock).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

from raykd.core.errors import ResourceError
from raykd.core.spec import (
    BOUNDS,
    DEFAULT_TEMPERATURE,
    JobSpec,
    MethodSpec,
    ParamSpace,
    SpecError,
    SweepSpec,
)

SWEPT = ("method", *BOUNDS)  # method, incorrect_weight, temperature, alpha
METRIC = "val_accuracy"
SPAN_METRIC = "val_f1"
MODE = "max"
TRIAL_DRIVER_CPUS = 0.01  # a Tune trial cannot reserve 0 CPU (RAY-NOTES)
OPTUNA_MISSING = "searcher 'optuna' needs the optuna package: pip install 'raykd[optuna]'"



def sweep_metric(spans: bool) -> str:
    """What ranks the trials (always maximized): ``val_accuracy`` of the last reported epoch
    for classification; for span extraction SQuAD v2.0 ``val_f1`` (percent, best span per
    question over its windows, no-answer threshold chosen on val), not the window accuracy,
    which counts a window's start/end hits and ignores how questions are answered."""
    return SPAN_METRIC if spans else METRIC


def check_sweep(spec: JobSpec) -> SweepSpec:
    """The spec's sweep section, with the checks the spec model cannot make by itself.

    Raises:
        SpecError: no ``sweep:`` section, augmentation on (trials read cached logits), or
            ``searcher: optuna`` without the optuna package.
    """
    if spec.sweep is None:
        raise SpecError("the spec has no sweep: section; add one (see the example digits-sweep)")
    if spec.data.augment:
        raise SpecError(
            "data.augment: true cannot be swept: trials read the cached teacher logits; "
            "set data.augment: false"
        )
    if spec.sweep.searcher == "optuna" and importlib.util.find_spec("optuna") is None:
        raise SpecError(OPTUNA_MISSING)
    return spec.sweep


def _domain(space: ParamSpace, searcher: str) -> Any:
    from ray import tune

    if space.values is not None:
        values = [float(v) for v in space.values]
        return tune.grid_search(values) if searcher == "grid" else tune.choice(values)
    assert space.low is not None and space.high is not None  # ParamSpace guarantees it
    return (
        tune.loguniform(space.low, space.high) if space.log else tune.uniform(space.low, space.high)
    )


def param_space(sweep: SweepSpec, base: MethodSpec) -> dict[str, Any]:
    """The Tune search space: swept fields as Tune domains, the others fixed from ``base``.

    Grid search crosses every ``values`` list (``tune.grid_search``); random and optuna
    draw from ``tune.choice`` / ``tune.uniform`` / ``tune.loguniform``.
    """
    from ray import tune

    space: dict[str, Any] = {}
    if sweep.method:
        methods = list(sweep.method)
        space["method"] = (
            tune.grid_search(methods) if sweep.searcher == "grid" else tune.choice(methods)
        )
    else:
        space["method"] = base.method
    for name in BOUNDS:
        given: ParamSpace | None = getattr(sweep, name)
        space[name] = getattr(base, name) if given is None else _domain(given, sweep.searcher)
    if per_method_temperature(sweep, base):
        del space["temperature"]  # each trial takes its method's own default (:func:`resolved`)
    return space


def per_method_temperature(sweep: SweepSpec, base: MethodSpec) -> bool:
    """Whether each trial's T is its own method's default (``DEFAULT_TEMPERATURE``).

    So when the sweep searches the method but not T, and the base method's T is its
    method's default (not set to anything else): annealing then runs at T = 1 and kd/wkd at
    T = 4, as ``raykd run`` would run them. A base T other than its method's default is
    kept for every method. (A T set to exactly its method's default reads as not set.)
    """
    return (bool(sweep.method) and sweep.temperature is None
            and base.temperature == DEFAULT_TEMPERATURE[base.method])


def resolved(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config with T filled in: its method's default when the space leaves T out."""
    if "temperature" in config or config.get("method") not in DEFAULT_TEMPERATURE:
        return dict(config)
    return {**config, "temperature": DEFAULT_TEMPERATURE[str(config["method"])]}


def varied(sweep: SweepSpec) -> list[str]:
    """The names of the swept fields, in table order."""
    return [name for name in SWEPT if getattr(sweep, name) is not None]


def trial_method(base: MethodSpec, config: dict[str, Any]) -> MethodSpec:
    """``base`` with the trial's method, W, T and alpha; its born-again generations dropped."""
    config = resolved(config)
    update = {k: config[k] for k in SWEPT if k in config}
    for k in BOUNDS:
        if k in update:
            update[k] = float(update[k])
    return base.model_copy(update={**update, "generations": 1, "label": None})


def search_alg(sweep: SweepSpec, *, seed: int, metric: str = METRIC) -> Any | None:
    """None for grid/random (Tune's variant generator); an OptunaSearch (TPE) for optuna."""
    if sweep.searcher != "optuna":
        return None
    if importlib.util.find_spec("optuna") is None:
        raise SpecError(OPTUNA_MISSING)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(metric=metric, mode=MODE, seed=seed)


def scheduler(sweep: SweepSpec, *, epochs: int) -> Any | None:
    """ASHA over epochs (``training_iteration``) when asked; None for FIFO.

    Every trial gets at least one epoch; at each rung (1, 2, 4, ... epochs) only the top
    half continues. A trial that reaches the last epoch is left to end by itself
    (``stop_last_trials=False``): a stop there would kill a nested TorchTrainer while it
    shuts down, and leak its placement group.
    """
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max(1, epochs),
        grace_period=1,
        reduction_factor=2,
        stop_last_trials=False,
    )


@dataclass(frozen=True)
class TrialPlan:
    """Resources of one trial and how many trials run at once.

    Attributes:
        trial_cpus: CPUs the trial itself reserves (the whole student when it has one
            worker; a token share when it only drives a nested TorchTrainer).
        trial_gpus: GPUs the trial itself reserves.
        worker_cpus: CPUs its nested Ray Train workers reserve together (0 for one worker).
        worker_gpus: GPUs its nested workers reserve together.
        concurrency: trials at once.
        threads: torch threads of each student process.
        nested: whether trials build a TorchTrainer (num_workers > 1).
    """

    trial_cpus: float
    trial_gpus: float
    worker_cpus: float
    worker_gpus: float
    concurrency: int
    threads: int
    nested: bool

    @property
    def cpus_per_trial(self) -> float:
        return self.trial_cpus + self.worker_cpus

    @property
    def gpus_per_trial(self) -> float:
        return self.trial_gpus + self.worker_gpus


def _fits(need: float, have: float, what: str, advice: str) -> None:
    if need > have + 1e-9:
        raise ResourceError(f"one trial needs {need:g} {what}, the cluster has {have:g}; {advice}")


def plan_resources(
    spec: JobSpec, *, cluster_cpus: float, cluster_gpus: float, use_gpu: bool
) -> TrialPlan:
    """Trial resources and concurrency that fit a cluster of the given size.

    One worker: the trial is the student (``cpus_per_worker`` CPUs, one GPU with
    ``use_gpu``). N > 1 workers: the trial is a driver of 0.01 CPU whose TorchTrainer
    reserves N x ``cpus_per_worker``. Teacher actors are gone by then (their logits are
    cached), so they take nothing. Concurrency is ``floor(CPUs / CPUs per trial)`` (and the
    same for GPUs), capped by ``sweep.max_concurrent_trials`` when that is smaller.

    Raises:
        ResourceError: a single trial does not fit.
    """
    sc = spec.scaling
    nested = sc.num_workers > 1
    gpu = 1.0 if use_gpu else 0.0
    if nested:
        plan = (TRIAL_DRIVER_CPUS, 0.0, sc.num_workers * sc.cpus_per_worker, sc.num_workers * gpu)
    else:
        plan = (sc.cpus_per_worker, gpu, 0.0, 0.0)
    cpus, gpus = plan[0] + plan[2], plan[1] + plan[3]
    advice = (
        f"lower scaling.cpus_per_worker (now {sc.cpus_per_worker:g}) or scaling.num_workers "
        f"(now {sc.num_workers})"
    )
    if nested:
        advice += f"; the trial's driver takes {TRIAL_DRIVER_CPUS:g} CPU besides its workers"
    _fits(cpus, cluster_cpus, "CPUs", advice)
    _fits(gpus, cluster_gpus, "GPUs", "set scaling.use_gpu: false or lower scaling.num_workers")
    fit = math.floor(cluster_cpus / cpus + 1e-9)
    if gpus > 0:
        fit = min(fit, math.floor(cluster_gpus / gpus + 1e-9))
    asked = spec.sweep.max_concurrent_trials if spec.sweep else None
    concurrency = max(1, min(fit, asked) if asked else fit)
    return TrialPlan(
        trial_cpus=plan[0],
        trial_gpus=plan[1],
        worker_cpus=plan[2],
        worker_gpus=plan[3],
        concurrency=concurrency,
        threads=max(1, int(sc.cpus_per_worker)),
        nested=nested,
    )


def num_trials(sweep: SweepSpec) -> int:
    """Trials the sweep will run: the grid's size x num_samples, or num_samples."""
    if sweep.searcher != "grid":
        return sweep.num_samples
    size = len(sweep.method) if sweep.method else 1
    for name in BOUNDS:
        space: ParamSpace | None = getattr(sweep, name)
        if space is not None and space.values is not None:
            size *= len(space.values)
    return size * sweep.num_samples
