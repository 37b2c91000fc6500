"""The job's Ray stage: join ``RAY_ADDRESS`` or start a local Ray, put the data's splits in
the object store once, and tell whether the cluster has GPUs."""

from __future__ import annotations

import os
from typing import Any

from raykd.console import quiet_ray_env
from raykd.core.allowlist import allowlist_env
from raykd.core.errors import ResourceError
from raykd.core.spec import JobSpec
from raykd.data import Dataset

__all__ = ["RAY_ENV", "ensure_ray", "online_in_process", "put_splits", "resolve_gpu",
           "worker_import_path"]

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
