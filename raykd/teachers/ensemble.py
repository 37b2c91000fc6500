"""Online serving on CPUs: all M teachers in one actor, one call per student step.

With augmentation the students need fresh teacher logits every step. One actor per
teacher (the :class:`~raykd.teachers.TeacherPool`, right for GPUs: each teacher on its
own device) costs, on CPUs, M round trips per step and M processes whose torch threads
fight the student's for the same cores. :class:`EnsembleServer` holds every teacher in
one process and answers ``logits(x)`` with the (M, B, C) stack in a single call; its
torch threads are the CPUs of its node the student leaves (:func:`ensemble_threads`), and its OpenMP
threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning against the
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

PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""OpenMP threads that sleep when idle: two processes share the cores without spinning."""


def ensemble_threads(node_cpus: int, student_threads: int) -> int:
    """Torch threads of the ensemble actor: the node's CPUs the student leaves free (>= 1).

    The loop asks for step i+1's logits while step i trains, so both run at once; on a
    node with no CPU to spare the ensemble gets one thread and the OS shares the cores.
    """
    return max(1, int(node_cpus) - int(student_threads))


class EnsembleServer:
    """Every teacher of the ensemble in one process; ``logits`` returns their (M, B, C) stack."""

    def __init__(self, configs: list[dict[str, Any]], input_shape: tuple[int, ...],
                 num_classes: int, student_threads: int) -> None:
        from raykd.teachers.teacher import Teacher, node_cpus

        self.threads = ensemble_threads(node_cpus() or 1, student_threads)
        self.teachers = [Teacher(i, c["model"], input_shape, num_classes,
                                 checkpoint=c["checkpoint"], threads=self.threads)
                         for i, c in enumerate(configs)]
        self.requests = 0

    def ready(self) -> int:
        """This actor's torch threads, once every teacher is loaded."""
        return self.threads

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(M, B, C) float32 logits of every teacher for one batch (B, *input_shape)."""
        self.requests += 1
        return np.stack([t.logits(x) for t in self.teachers])

    def weights_hashes(self) -> list[str]:
        return [t.weights_hash() for t in self.teachers]


EnsembleActor = ray.remote(EnsembleServer)


class OnlineEnsemble:
    """The one-actor ensemble as the student stage uses a pool: ``actors``, ``shutdown``."""

    def __init__(self, configs: list[dict[str, Any]], *, input_shape: tuple[int, ...],
                 num_classes: int, student_threads: int, timeout_s: float = 120.0) -> None:
        actor = EnsembleActor.options(
            num_cpus=0, max_restarts=3, max_task_retries=3,
            runtime_env={"env_vars": dict(PASSIVE_ENV)},
        ).remote(configs, tuple(input_shape), num_classes, student_threads)
        self.actors = [actor]
        try:
            self.threads = int(ray.get(actor.ready.remote(), timeout=timeout_s))
        except BaseException:
            self.shutdown()
            raise

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
