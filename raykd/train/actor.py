"""A job's single-worker students on one long-lived Ray actor: no Ray Train start-up per student.

A ``TorchTrainer`` pays ~15-20 s per fit on a 2-CPU machine (controller and worker
processes, imports, process group, per-report round trips, teardown); on small data that
is 50-100x the training itself. With ``scaling.num_workers == 1`` there is no DDP to set
up, so raykd (``scaling.student_runner: auto`` on a cluster it joined, or ``actor``) trains
every student of the job, one after another, in one :class:`StudentWorker` actor started
once per job (while the teachers train, on a CPU cluster). It reserves what one Ray Train
worker would (``cpus_per_worker`` CPUs, one GPU with GPUs) and runs the same loop
(:func:`raykd.train.loop.student_epochs`).

Per epoch the actor saves the state (:mod:`raykd.train.state`) under
``<storage>/<run name>/epoch-NNNN`` (the driver keeps the newest
:data:`~raykd.train.runs.KEEP` it recorded) and streams ``{"metrics", "checkpoint",
"costs"}`` back (a Ray streaming generator, :func:`fit_epochs`): the driver emits the
``epoch`` event, exactly as Ray Train's callback does. The driver runner
(:mod:`raykd.train.driver`) runs the same :func:`fit_epochs` in the driver's own process.
Failure budget, as Ray Train's: when the actor's process dies, Ray restarts it
(``max_restarts=-1``: the budget is counted per student, by the driver) and the student
resumes from the last state the driver received, up to ``max_failures`` times; an error
raised by the loop itself (bad data, a bug) is not retried.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import torch

from raykd.core.errors import ResourceError
from raykd.core.faults import after_epoch, step_hook
from raykd.train.config import StudentConfig
from raykd.train.loop import student_epochs
from raykd.train.runs import EpochReports, StudentResult, StudentRun, loop_data, published
from raykd.train.state import BEST_FILE, load_progress, save_state


class StudentWorker:
    """The actor body: trains the students it is handed, one at a time, in this process."""

    def __init__(self, use_gpu: bool = False) -> None:
        self.use_gpu = use_gpu
        warm_up()

    def ready(self) -> str:
        """This actor's node id, once its process is up (imports done)."""
        return ray.get_runtime_context().get_node_id()

    def fit(self, config: StudentConfig, refs: dict[str, Any], run_dir: str,
            resume_from: str | None, fault: dict[str, Any] | None = None,
            ) -> Iterator[dict[str, Any]]:
        """Train ``config`` from ``resume_from`` (or fresh); yield each epoch's report
        (:func:`fit_epochs`). ``refs`` as :func:`raykd.train.trainer.worker_inputs` takes them."""
        yield from fit_epochs(config, refs, run_dir, resume_from, fault, use_gpu=self.use_gpu)


def fit_epochs(config: StudentConfig, refs: dict[str, Any], run_dir: str | Path,
               resume_from: str | None, fault: dict[str, Any] | None = None, *,
               use_gpu: bool = False) -> Iterator[dict[str, Any]]:
    """Train ``config`` in this process from ``resume_from`` (or fresh); yield each epoch's
    report ``{"metrics", "checkpoint": <state directory under run_dir>, "costs"}``.

    ``costs``: ``validation`` = the epoch's time outside its steps and its save
    (validation, the best-weights copy; the model's and optimizer's set-up before the
    first epoch), ``state_save`` = the save's.
    """
    data = loop_data(refs)
    device = torch.device("cuda" if use_gpu else "cpu")
    root = Path(run_dir)
    epochs = student_epochs(config, data, wrap=lambda m: m.to(device), resume=resume_from,
                            on_step=step_hook(fault))
    start = time.perf_counter()
    for metrics, state in epochs:
        saving = time.perf_counter()
        path = save_epoch_state(root, int(metrics["epoch"]), state, config)
        saved = time.perf_counter()
        costs = {"validation": max(0.0, saving - start - metrics["epoch_seconds"]),
                 "state_save": saved - saving}
        yield {"metrics": metrics, "checkpoint": str(path), "costs": costs}
        after_epoch(fault, int(metrics["epoch"]))
        start = time.perf_counter()


def save_epoch_state(root: Path, epoch: int, state: Any, config: StudentConfig) -> Path:
    """Write ``state`` to ``root/epoch-NNNN`` whole (temp dir, then rename); keep the newest.

    A directory of the same epoch left by a process that died before its report arrived
    is replaced (the loop is deterministic: the same epoch gives the same state). Nothing
    is pruned here: only the driver knows which states it recorded (an actor whose driver
    died may run ahead; pruning there could delete the state the next attempt resumes from).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_state(state, tmp, config=config)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if state.best_saved is not None and state.best_saved[1].parent == tmp:  # moved with it
        state.best_saved = (state.best_saved[0], final / BEST_FILE, state.best_saved[2])
    return final


def warm_up() -> None:
    """What a student's first fit would otherwise pay in a fresh process, done ahead (the
    student actor while it starts, beside the teachers' work; the driver runner in a thread
    while Ray starts): torch's lazy imports (the first optimizer imports ``torch._dynamo``,
    ~2 s on 2 CPUs; the first backward starts autograd). The loop's own imports are this
    module's, loaded with it."""
    weight = torch.zeros(2, requires_grad=True)
    opt = torch.optim.AdamW([weight], lr=0.0)
    (weight * 2).sum().backward()
    opt.step()


StudentActor = ray.remote(StudentWorker)


def start_worker(*, cpus: float, use_gpu: bool, passive: bool = False) -> Any:
    """Start the job's student actor (returns at once; its process starts in the background).

    ``passive``: its OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``), for a
    student that shares its cores with teachers serving online.
    """
    env = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}} if passive else None
    worker = StudentActor.options(num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_restarts=-1,
                                  max_task_retries=0, runtime_env=env).remote(use_gpu)
    worker._raykd_gpu = use_gpu
    return worker


def stop_worker(worker: Any) -> None:
    """Kill the student actor (no restart); quiet when it or Ray is already gone."""
    if worker is None or not ray.is_initialized():
        return
    try:
        ray.kill(worker, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone: nothing to release
        pass


RESTART_TIMEOUT_S = 120.0


def worker_uses_gpu(worker: Any) -> bool:
    """Whether the handle is a GPU student actor (as :func:`start_worker` made it)."""
    return bool(getattr(worker, "_raykd_gpu", False))


def wait_ready(worker: Any, *, what: str, timeout_s: float = RESTART_TIMEOUT_S) -> None:
    """Wait until the student actor answers (its calls fail while Ray restarts it).

    Raises:
        ResourceError: when it does not answer within ``timeout_s``: no node has room for
            it (``what`` says what it reserves and why it is awaited).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(worker.ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise ResourceError(f"the student actor ({what}) did not start within "
                                    f"{timeout_s:g}s: no node has room for it") from exc
            time.sleep(0.2)


def train_student_actor(worker: Any, config: StudentConfig, *, refs: dict[str, Any],
                        storage: Path, name: str, out: Path, run: StudentRun) -> StudentResult:
    """Fit one student on ``worker``; copy its best weights to ``out`` (see the module docstring).

    ``name`` must be new under ``storage`` (this attempt's own directory of states).
    Raises the loop's own error unchanged (a Ray-wrapped user error keeps its type), or the
    actor's death once the student has died ``run.max_failures + 1`` times.
    """
    start = time.time()
    last = run.resume_from
    if last is not None and load_progress(last).epoch >= run.epochs:
        return published(Path(last), load_progress(last), out, seconds=0.0)
    run_dir = storage.resolve() / name
    failures = 0
    need = f"{config.threads} CPU" + (", 1 GPU" if worker_uses_gpu(worker) else "")
    reports = EpochReports(run, last, costs={"actor_start": 0.0, "validation": 0.0,
                                             "state_save": 0.0})
    waiting = time.perf_counter()
    wait_ready(worker, what=need)
    reports.costs["actor_start"] += time.perf_counter() - waiting
    while True:
        stream = worker.fit.options(num_returns="streaming").remote(
            config, refs, str(run_dir), reports.last, run.fault)
        try:
            for ref in stream:
                reports.take(ray.get(ref))
            break
        except ray.exceptions.RayActorError as exc:
            if isinstance(exc, ray.exceptions.RayTaskError):
                raise  # raised by the loop (e.g. an online teacher that died for good): not ours
            failures += 1  # this actor's process died
            if failures > run.max_failures:
                raise
            run.restarted(exc)
            waiting = time.perf_counter()
            wait_ready(worker, what=f"{need}, after its process died")
            reports.costs["actor_start"] += time.perf_counter() - waiting
    return reports.result(out, name=name, seconds=time.time() - start)
