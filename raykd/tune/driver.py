"""run_sweep(spec): a Ray Tune search over the method, W, T and alpha on shared teacher logits.

The stages:

1. data and teachers exactly as ``run_job`` does (``load_dataset``, ``check_models``,
   ``ensure_ray``, ``put_splits``, ``run_teachers`` with the disk ``LogitCache``); the
   teacher actors are shut down once their logits are cached;
2. the teachers' (M, N, C) train logits go into the object store once; every trial
   reads that one copy (``raykd.tune.trial``), none runs a teacher forward pass;
3. Tune runs the trials (grid/random/optuna, FIFO/ASHA) with resources that fit the
   cluster (``raykd.tune.space.plan_resources``), storing its state in
   ``<job_dir>/tune``: a second call with the same job directory restores it and reruns
   no finished trial;
4. ``trials.csv``, ``heatmap_w_t.png``, ``alpha.png``; the best configuration (arg-max of
   the last reported ``val_accuracy``; for span data SQuAD ``val_f1``) retrained on
   train+val and tested:
   ``best_student.safetensors``; everything in ``sweep.json``
   (:class:`raykd.core.results.SweepResult`, built by :mod:`raykd.tune.outputs`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from raykd.core.jobdir import JobLayout, absolute, resolve_spec_paths, spec_hash
from raykd.core.spec import JobSpec, SpecError
from raykd.data import Dataset
from raykd.engine import (
    Job,
    Lifecycle,
    LifecycleCallback,
    TeacherSet,
    open_job,
    prepare,
    prepare_splits,
    resolve_gpu,
)
from raykd.train.config import StudentConfig, teacher_accuracy
from raykd.tune.callbacks import TrialEvents
from raykd.tune.final import final_student, reuse_final
from raykd.tune.outputs import sweep_result, write_outputs
from raykd.tune.results import best_row, grid_rows
from raykd.tune.space import (
    MODE,
    TrialPlan,
    check_sweep,
    num_trials,
    param_space,
    plan_resources,
    scheduler,
    search_alg,
    sweep_metric,
    varied,
)
from raykd.tune.trial import trainable_for

Log = Callable[[str], None]


def default_job_dir(spec: JobSpec) -> Path:
    """``<storage>/<name>-sweep-<first 8 hex of spec_hash(spec)>``: rerunning the same spec
    resumes it.

    A sweep started by raykd before the spec hash was one (its directory named by the first
    8 hex of sha256 of ``spec.model_dump_json()``) keeps its directory: when only that one
    exists it is returned, so an upgrade resumes the sweep instead of starting it again (its
    events hold absolute paths into it, so it is reused rather than renamed).
    """
    storage = Path(spec.storage)
    current = storage / f"{spec.name}-sweep-{spec_hash(spec)[:8]}"
    legacy = storage / f"{spec.name}-sweep-{_legacy_digest(spec)}"
    return legacy if not current.exists() and JobLayout(legacy).spec.is_file() else current


def _legacy_digest(spec: JobSpec) -> str:
    """How raykd 0.1.0 named a sweep's directory (kept to find such directories, never to name new ones)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]


def naive_teachers(spec: JobSpec) -> dict[str, Any]:
    """What a naive trial needs to rebuild the teachers: each one's model and checkpoint."""
    missing = [i for i, t in enumerate(spec.teachers) if t.checkpoint is None]
    if missing:
        raise SpecError(
            f"naive mode rebuilds the teachers in every trial and needs checkpoints; "
            f"teachers {missing} have none"
        )
    return {
        "teachers": [
            {"model": t.model.model_dump(), "checkpoint": t.checkpoint} for t in spec.teachers
        ]
    }


def shared_inputs(
    job: Job,
    data: Dataset,
    refs: dict[str, Any],
    teachers: TeacherSet | None,
    plan: TrialPlan,
    *,
    use_gpu: bool,
) -> dict[str, Any]:
    """What every trial reads: the refs (teacher logits put in the object store here, once).

    ``student`` is the base :class:`~raykd.train.config.StudentConfig` (method
    ``methods[0]``, no augmentation, ``plan.threads`` threads); a trial replaces its method
    and label.
    """

    spec = job.spec
    naive = None
    if teachers is None:
        naive = {
            **naive_teachers(spec),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "topk": spec.cache.topk,
        }
    accuracy = None
    if teachers is not None and spec.methods[0].teacher_weights != "uniform":
        accuracy = teacher_accuracy(teachers.logits["val"], data.val.y)
    student = replace(
        StudentConfig.for_job(spec, data, spec.methods[0], teacher_accuracy=accuracy),
        augment=False, threads=plan.threads,
    )
    return {
        **{k: refs[k] for k in ("x_train", "y_train", "x_val", "y_val")},
        "teacher_train": None if teachers is None else teachers.train_ref(),
        "student": student,
        "use_gpu": use_gpu,
        "scaling": spec.scaling.model_dump(),
        "naive": naive,
        "train_storage": str(job.layout.tune_train.resolve()),
    }


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def make_tuner(job: Job, shared: dict[str, Any], plan: TrialPlan,
               metric: str) -> tuple[Any, bool]:
    """A new Tuner ranking trials by ``metric``, or the one stored under ``<job_dir>/tune``
    (then True: resumed)."""
    from ray import tune

    sweep = check_sweep(job.spec)
    resources = {"CPU": plan.trial_cpus, **({"GPU": plan.trial_gpus} if plan.trial_gpus else {})}
    trainable = tune.with_resources(
        tune.with_parameters(trainable_for(plan.nested), shared=shared), resources
    )
    path = job.layout.tune.resolve()
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True), True
    config = tune.TuneConfig(
        metric=metric,
        mode=MODE,
        search_alg=search_alg(sweep, seed=job.spec.train.seed, metric=metric),
        scheduler=scheduler(sweep, epochs=job.spec.train.epochs),
        num_samples=sweep.num_samples,
        max_concurrent_trials=plan.concurrency,
        time_budget_s=sweep.time_budget_s,
        trial_dirname_creator=_trial_dirname,
        # one trial process per slot: its imports (ray.tune, torch, raykd) and its first
        # optimizer's torch._dynamo import are paid once per slot, not per trial; a trial
        # takes everything from its config and `shared` (tests/integration/test_sweep_reuse.py)
        reuse_actors=not plan.nested,
    )
    run = tune.RunConfig(
        name=JobLayout.TUNE,
        storage_path=str(path.parent),
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=0),
        callbacks=[TrialEvents(job.sink)] if job.sink is not None else [],
    )
    space = param_space(sweep, job.spec.methods[0])
    return tune.Tuner(trainable, param_space=space, tune_config=config, run_config=run), False


def run_sweep(
    spec: JobSpec, *, job_id: str | None = None, job_dir: Path | None = None, log: Log = print,
    naive: bool = False, on_open: Callable[[Job], AbstractContextManager[Any]] | None = None,
    callbacks: Iterable[LifecycleCallback] = (),
) -> dict[str, Any]:
    """Run (or resume) the sweep of ``spec.sweep``; write and return ``sweep.json``'s content.

    Args:
        spec: A job spec with a ``sweep:`` section; ``methods[0]`` is the base that each
            trial overrides (method, W, T, alpha).
        job_id: The job's id (``raykd run --job-id``, as the service submits it): the
            directory is then ``<storage>/<job_id>``, as for a run.
        job_dir: Output directory; default ``<storage>/<job_id>`` with an id, else
            ``<storage>/<name>-sweep-<spec hash>``. A directory that holds this spec's
            interrupted sweep is resumed.
        log: Receives one line per stage.
        naive: Benchmark baseline: no teacher stage; every trial builds the teachers from
            their checkpoints (all must have one) and computes its own train logits.
            No final retraining.
        on_open: Makes a context manager, entered with the opened job for the rest of the
            sweep (``raykd run`` diverts Ray's output to the job's ``ray.log``).
        callbacks: Get each event of the sweep as it is written (trials' epochs and results
            included) and its end (:class:`raykd.engine.LifecycleCallback`).

    Raises:
        SpecError: no sweep section, augmentation on, optuna missing, another spec's job
            directory, or (naive) a teacher without a checkpoint.
        ResourceError: one trial does not fit the cluster.
    """
    sweep = check_sweep(spec)
    if naive:
        naive_teachers(spec)
    start = time.perf_counter()
    spec = resolve_spec_paths(spec)
    trials = num_trials(sweep)
    if job_dir is None and job_id is None:
        job_dir = default_job_dir(spec)
    job = open_job(spec, job_id=job_id, job_dir=absolute(job_dir) if job_dir else None,
                   kind="sweep", log=log, students=trials, total_epochs=trials * spec.train.epochs)
    return Lifecycle(job, show=on_open, start=start, callbacks=callbacks).run(
        lambda life: _sweep(life, naive=naive))


def _sweep(life: Lifecycle, *, naive: bool) -> dict[str, Any]:
    """The stages of a sweep after its job is opened; ``sweep.json``'s content."""
    job = life.job
    spec, sweep, job_dir = job.spec, check_sweep(job.spec), job.job_dir
    plans: list[tuple[TrialPlan, bool]] = []  # a trial that cannot fit fails before teachers
    teachers: TeacherSet | None = None
    if naive:
        data, refs = prepare_splits(job, on_ray=lambda _: plans.append(_plan(job)))
    else:
        prepared = prepare(job, on_ray=lambda _: plans.append(_plan(job)))
        data, refs, teachers = prepared.data, prepared.refs, prepared.teachers
    plan, use_gpu = plans[0]
    shared = shared_inputs(job, data, refs, teachers, plan, use_gpu=use_gpu)
    metric = sweep_metric(data.spans is not None)
    with job.stage("tune"):
        grid, resumed = _fit(job, shared, plan, metric)
    rows = grid_rows(grid, epochs=spec.train.epochs, statuses=trial_statuses(job_dir),
                     metric=metric)
    stop_if_interrupted(job, rows, tune_seconds=job.timer.stages["tune"])
    best = best_row(rows, metric)
    files = write_outputs(job_dir, rows, metric)
    final = None
    if sweep.final_retrain and teachers is not None:
        final = _final(job, data, teachers, shared, best, plan)
    result = sweep_result(job, data, rows, best, final, files, plan, resumed=resumed,
                          naive=naive, timings=life.timings(), metric=metric)
    return life.write_result(result)  # atomic, as result.json; what a reader of it gets


def _final(
    job: Job,
    data: Dataset,
    teachers: TeacherSet,
    shared: dict[str, Any],
    best: dict[str, Any],
    plan: TrialPlan,
) -> dict[str, Any]:
    """The best configuration's student on train+val, or the one an earlier call trained."""
    final = reuse_final(job.job_dir, best, data, hf=job.spec.student.model.name == "hf")
    if final is not None:
        job.log(f"final student of this best configuration already trained: {final['checkpoint']}")
        return final
    with job.timer.stage("final"):
        return final_student(job, data, teachers, shared, best, plan)


def _plan(job: Job) -> tuple[TrialPlan, bool]:
    """Trial resources for this cluster, logged."""
    import ray

    sweep = check_sweep(job.spec)
    use_gpu = resolve_gpu(job.spec.scaling.use_gpu)
    have = ray.cluster_resources()
    plan = plan_resources(
        job.spec,
        cluster_cpus=float(have.get("CPU", 1)),
        cluster_gpus=float(have.get("GPU", 0)),
        use_gpu=use_gpu,
    )
    asked = sweep.max_concurrent_trials
    if asked and asked > plan.concurrency:
        job.log(
            f"sweep.max_concurrent_trials={asked} does not fit the cluster; "
            f"running {plan.concurrency}"
        )
    job.log(
        f"sweep: {num_trials(sweep)} trials ({sweep.searcher}, {sweep.scheduler}) "
        f"over {varied(sweep)}, "
        f"{plan.concurrency} at once, {plan.cpus_per_trial:g} CPU per trial "
        f"({'TorchTrainer per trial' if plan.nested else 'student in the trial process'}); "
        f"cluster {have.get('CPU', 0):g} CPU / {have.get('GPU', 0):g} GPU"
    )
    return plan, use_gpu


def _fit(job: Job, shared: dict[str, Any], plan: TrialPlan, metric: str) -> tuple[Any, bool]:
    """Run the Tuner (new or restored); its ResultGrid and whether it resumed."""
    tuner, resumed = make_tuner(job, shared, plan, metric)
    if resumed:
        job.log(
            f"resuming the sweep stored in {job.layout.tune}: finished trials are kept"
        )
    grid = tuner.fit()
    job.log(f"tune finished: {len(grid)} trials, {grid.num_errors} errors")
    return grid, resumed


def trial_statuses(job_dir: Path) -> dict[str, str]:
    """Tune's status of every trial (``TERMINATED``, ``ERROR``, ``PENDING``, ``RUNNING``)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(JobLayout(job_dir).tune.resolve()))
    return {t.trial_id: t.status for t in analysis.trials}


def stop_if_interrupted(job: Job, rows: list[dict[str, Any]], *, tune_seconds: float) -> None:
    """Raise KeyboardInterrupt when Tune returned early (Ctrl+C) with trials left to run.

    Tune catches SIGINT, saves its state and returns the trials so far; the sweep then
    stops here (no table of a partial sweep, no retraining) and says how to resume. Trials
    left unstarted by ``sweep.time_budget_s`` are not an interruption.
    """
    budget = job.spec.sweep.time_budget_s if job.spec.sweep else None
    left = [r["trial_id"] for r in rows if r["status"] in ("not started", "unfinished")]
    if not left or (budget is not None and tune_seconds >= budget):
        return
    job.log(
        f"sweep interrupted with {len(left)} of {len(rows)} trials left; run the same command "
        f"with --job-dir {job.job_dir} to resume (finished trials are kept)"
    )
    raise KeyboardInterrupt
