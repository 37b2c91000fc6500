"""One way through a job: context (id, directory, events), prepare (data -> teachers),
students (incl. born-again), the lifecycle every job shares, and ``run_job`` tying them
together."""

from raykd.engine.lifecycle import Lifecycle, LifecycleCallback
from raykd.engine.run import run_job

__all__ = ["Lifecycle", "LifecycleCallback", "run_job"]
