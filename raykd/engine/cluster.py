"""The job's Ray stage: join ``RAY_ADDRESS`` or start a local Ray, put the data's splits in
the object store once, and tell whether the cluster has GPUs."""

from __future__ import annotations

import os
from typing import Any, Literal

from raykd.console import quiet_ray_env
from raykd.core.allowlist import allowlist_env
from raykd.core.errors import ResourceError
from raykd.core.spec import JobSpec
from raykd.data import Dataset

__all__ = ["RAY_ENV", "Runner", "ensure_ray", "may_train_on_driver", "online_in_process",
           "put_splits", "ray_started_here", "resolve_gpu", "runner_for", "student_runner",
           "worker_import_path"]

Runner = Literal["driver", "actor", "train"]
"""Where a job's students train (:func:`student_runner`)."""

# Ray Train polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default):
# each epoch report would wait for it.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def ensure_ray(*, num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray (token auth stays on)."""
    quiet_ray_env()  # too late for a Ray imported already: `raykd` sets it at its start
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    os.environ.update(env)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level="WARNING")
    else:
        # The dashboard stays on loopback; Ray Train's state queries need it. The workers
        # import what this process can (user models) and see its model allowlist.
        env |= {**worker_import_path(), **allowlist_env()}
        ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", log_to_driver=True,
                 logging_level="WARNING", runtime_env={"env_vars": env})


def worker_import_path() -> dict[str, str]:
    """``{"PYTHONPATH": ...}``: this process's import path outside the interpreter's own
    folders (the working directory, ``PYTHONPATH``, folders added to ``sys.path``), so that a
    local Ray's workers can import an allowlisted user model as the driver does. A cluster
    joined by ``RAY_ADDRESS`` gets code the Ray way: ``ray job submit --working-dir``."""
    import sys

    own = tuple(p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    entries = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    extra = [p for p in dict.fromkeys(entries) if os.path.isdir(p) and not p.startswith(own)]
    return {"PYTHONPATH": os.pathsep.join(extra)} if extra else {}


def put_splits(data: Dataset) -> dict[str, Any]:
    """Every split's arrays in the object store, once: workers and actors map them zero-copy."""
    import ray

    refs: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        refs[f"x_{split}"] = ray.put(part.x)
        refs[f"y_{split}"] = ray.put(part.y)
    return refs


def resolve_gpu(setting: bool | str) -> bool:
    """``auto`` means: use GPUs when the cluster has any."""
    import ray

    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def online_in_process(spec: JobSpec) -> bool:
    """Whether online teachers (augmentation) run in the student workers' own processes.

    ``scaling.online_teachers``: ``in_process`` and ``actors`` as asked; ``auto`` in process
    on CPUs with one student worker (:mod:`raykd.train.online`).

    Raises:
        ResourceError: ``in_process`` asked while ``use_gpu: auto`` found GPUs.
    """
    sc = spec.scaling
    if sc.online_teachers == "actors":
        return False
    gpus = resolve_gpu(sc.use_gpu)
    if sc.online_teachers == "in_process" and gpus:
        raise ResourceError(
            "scaling.online_teachers='in_process' runs the teachers on the student workers' CPU "
            "threads, but the students use the cluster's GPUs (scaling.use_gpu: auto); set "
            "use_gpu: false, or online_teachers 'actors' or 'auto'")
    return not gpus and (sc.online_teachers == "in_process" or sc.num_workers == 1)


def ray_started_here() -> bool:
    """Whether the Ray this process is connected to is a local one it started itself (its
    ``ray.init()`` without an address made the head), of one node.

    False for a cluster joined by address (``RAY_ADDRESS``, a ``ray job submit`` driver, Ray
    Client) and for a head that other nodes joined: there the driver's CPUs are not the ones
    Ray would give a student actor.
    """
    import ray
    from ray._private import worker  # the node this process started or joined (Ray's own record)

    node = getattr(worker, "_global_node", None)
    try:
        head = node is not None and bool(node.is_head())
    except Exception:  # noqa: BLE001 - another Ray's internals: then assume joined
        return False
    return head and sum(1 for n in ray.nodes() if n.get("Alive")) == 1


def student_runner(spec: JobSpec) -> Runner:
    """Where the job's students train (``scaling.student_runner``), decided once Ray is up.

    ``train`` and ``actor`` as asked; ``driver`` as asked, on CPUs; ``auto``: ``train``
    for DDP (``num_workers > 1``), ``driver`` where the driver's process can stand for the
    student actor at no loss, else ``actor``. The driver stands for it when Ray is a local
    one this process started (:func:`ray_started_here`: the actor would run on this node's
    CPUs, with nothing else of Ray's scheduled beside it), without GPUs, without
    augmentation (online teachers' threads and the student's share the actor's passive
    OpenMP set-up; their steps, not a start, dominate such jobs), and without a spec
    fault that kills the student's process (which would kill the job, where Ray restarts
    an actor within ``max_failures``).

    Raises:
        ResourceError: ``driver`` asked while ``use_gpu: auto`` found GPUs.
    """
    sc = spec.scaling
    gpus = sc.num_workers == 1 and resolve_gpu(sc.use_gpu)
    if sc.student_runner == "driver" and gpus:
        raise ResourceError(
            "scaling.student_runner='driver' trains on the driver's CPU threads, but the "
            "students use the cluster's GPUs (scaling.use_gpu: auto); set use_gpu: false, "
            "or student_runner 'actor' or 'auto'")
    return runner_for(spec, gpus=gpus, local=sc.student_runner == "auto" and ray_started_here())


def runner_for(spec: JobSpec, *, gpus: bool, local: bool) -> Runner:
    """:func:`student_runner`'s rule, given whether the students get GPUs and whether Ray is
    a local one this process started."""
    sc = spec.scaling
    if sc.student_runner != "auto":
        return sc.student_runner
    if sc.num_workers > 1:
        return "train"
    f = spec.faults
    kills = f is not None and (f.kill_student_at_step is not None
                               or f.kill_student_after_epoch is not None)
    return "driver" if local and not gpus and not spec.data.augment and not kills else "actor"


def may_train_on_driver(spec: JobSpec) -> bool:
    """Whether :func:`student_runner` will likely say ``driver``, told before Ray is up
    (from the spec, ``RAY_ADDRESS`` and a Ray this process runs already): a driver that
    will train may warm torch up while Ray starts. GPUs found by ``use_gpu: auto`` are
    only known later (then the warm-up was for nothing)."""
    import ray

    if os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        local = False  # ensure_ray will join that cluster
    else:
        local = not ray.is_initialized() or ray_started_here()
    return runner_for(spec, gpus=spec.scaling.use_gpu is True, local=local) == "driver"
