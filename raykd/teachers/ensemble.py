"""Online serving on CPUs: all M teachers in one actor, one call per student step.

With augmentation the students need fresh teacher logits every step. One actor per
teacher (the :class:`~raykd.teachers.TeacherPool`, right for GPUs: each teacher on its
own device) costs, on CPUs, M round trips per step and M processes whose torch threads
fight the student's for the same cores. :class:`EnsembleServer` holds every teacher in
one process and answers ``logits(x)`` with the (M, B, C) stack in a single call
(``scaling.teacher_replicas`` copies of it serve DDP workers side by side); its
torch threads are its share of the cores the students leave on its node
(:func:`ensemble_threads`); its OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning against the
student's. Teachers are loaded from the checkpoints the pool trained or was given, so
the served logits are those the pool computed (the same weights, the same forward).

:class:`OnlineEnsemble` is what the student stage holds: the ``actors`` the loop calls,
``set_clients`` and ``shutdown`` as the pool has them. Ray restarts the actor if its
process dies (it reloads the checkpoints) and retries the calls in flight.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from raykd.teachers.teacher import Teacher
from raykd.train.steps import node_cpus

PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""OpenMP threads that sleep when idle: two processes share the cores without spinning."""


def ensemble_threads(node_cpus: int, student_threads: int, replicas: int = 1) -> int:
    """Torch threads of one ensemble copy: its share of the CPUs the students leave (>= 1).

    ``student_threads``: the threads of all the job's student workers on the node;
    ``replicas``: the ensemble copies sharing what they leave. The students ask for step
    i+1's logits while step i trains, so both compute at once; on a node the students
    fill, each copy gets one thread and the OS shares the cores (with passive OpenMP
    waits on both sides). Taking turns instead (the ensemble on every core while the
    student waits) measured half as fast on 2 cores (see ``raykd.train.loop._online``).
    """
    spare = int(node_cpus) - int(student_threads)
    return max(1, spare // max(1, int(replicas)))


class EnsembleServer:
    """Every teacher of the ensemble in one process; ``logits`` returns their (M, B, C) stack."""

    def __init__(self, configs: list[dict[str, Any]], input_shape: tuple[int, ...],
                 num_classes: int, student_threads: int, replicas: int = 1) -> None:
        self.threads = ensemble_threads(node_cpus() or 1, student_threads, replicas)
        self.teachers = [Teacher(i, c["model"], input_shape, num_classes,
                                 checkpoint=c["checkpoint"], threads=self.threads)
                         for i, c in enumerate(configs)]
        self.requests = 0

    def ready(self) -> int:
        """This copy's torch threads (:func:`ensemble_threads`), once every teacher is loaded."""
        return self.threads

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(M, B, C) float32 logits of every teacher for one batch (B, *input_shape)."""
        self.requests += 1
        return np.stack([t.logits(x) for t in self.teachers])

    def weights_hashes(self) -> list[str]:
        return [t.weights_hash() for t in self.teachers]

    def info(self) -> dict[str, Any]:
        """Requests served, threads, and the node this copy runs on."""
        return {"requests": self.requests, "threads": self.threads,
                "node_id": ray.get_runtime_context().get_node_id()}


EnsembleActor = ray.remote(EnsembleServer)


class OnlineEnsemble:
    """The one-actor ensemble as the student stage uses a pool: ``actors``, ``shutdown``."""

    replicas = True
    """``actors`` are copies of one ensemble: student worker r asks ``actors[r % n]``."""

    def __init__(self, configs: list[dict[str, Any]], *, input_shape: tuple[int, ...],
                 num_classes: int, student_threads: int, replicas: int = 1,
                 timeout_s: float = 120.0) -> None:
        self.actors = [EnsembleActor.options(
            num_cpus=0, max_restarts=3, max_task_retries=3,
            runtime_env={"env_vars": dict(PASSIVE_ENV)},
        ).remote(configs, tuple(input_shape), num_classes, student_threads, replicas)
            for _ in range(replicas)]
        try:
            ready = ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s)
        except BaseException:
            self.shutdown()
            raise
        self.threads = int(ready[0])

    def infos(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def set_clients(self, n: int) -> None:
        """Nothing to merge: each worker's call is one pass over every teacher."""

    def shutdown(self) -> None:
        """Kill the actor (no restart); idempotent, quiet when Ray is gone."""
        actors, self.actors = self.actors, []
        if not ray.is_initialized():
            return
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
