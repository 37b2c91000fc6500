"""Online serving on CPUs: all M teachers in one actor, one call per student step.

With augmentation the students need fresh teacher logits every step. One actor per
teacher (the :class:`~raykd.teachers.TeacherPool`, right for GPUs: each teacher on its
own device) costs, on CPUs, M round trips per step and M processes whose torch threads
fight the student's for the same cores. :class:`EnsembleServer` holds every teacher in
one process and answers ``logits(x)`` with the (M, B, C) stack in a single call; its
torch threads, and whether the student asks a step ahead, follow the cores the student
leaves on its node (:func:`ensemble_threads`); its OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning against the
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


def ensemble_threads(node_cpus: int, student_threads: int) -> tuple[int, bool]:
    """Torch threads of the ensemble actor, and whether the student asks a step ahead.

    With CPUs the student leaves free, the ensemble computes on those while the student
    trains (step i+1's logits asked during step i). On a node the student fills, the two
    take turns instead (lockstep): the ensemble computes on every core while the student
    waits, as a plain KD loop runs teachers and student one after the other; sharing
    the cores at once would only make them fight.
    """
    spare = int(node_cpus) - int(student_threads)
    return (spare, True) if spare >= 1 else (max(1, int(node_cpus)), False)


class EnsembleServer:
    """Every teacher of the ensemble in one process; ``logits`` returns their (M, B, C) stack."""

    def __init__(self, configs: list[dict[str, Any]], input_shape: tuple[int, ...],
                 num_classes: int, student_threads: int) -> None:
        from raykd.teachers.teacher import Teacher, node_cpus

        self.threads, self.ahead = ensemble_threads(node_cpus() or 1, student_threads)
        self.teachers = [Teacher(i, c["model"], input_shape, num_classes,
                                 checkpoint=c["checkpoint"], threads=self.threads)
                         for i, c in enumerate(configs)]
        self.requests = 0

    def ready(self) -> tuple[int, bool]:
        """(torch threads, ask ahead) of :func:`ensemble_threads`, once every teacher is loaded."""
        return self.threads, self.ahead

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
            self.threads, self.ahead = ray.get(actor.ready.remote(), timeout=timeout_s)
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
