"""One way through a job: context (id, directory, events), prepare (data -> teachers),
students (incl. born-again), and ``run_job`` tying them together."""

from raykd.engine.run import run_job

__all__ = ["run_job"]
