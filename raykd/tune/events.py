"""The old home of :class:`raykd.tune.callbacks.TrialEvents`, kept because a sweep's stored Tune
state (``<job_dir>/tune/tuner.pkl``) names the callback by this module: a sweep started before
the rename still resumes. New code imports :mod:`raykd.tune.callbacks`."""

from raykd.tune.callbacks import TrialEvents

__all__ = ["TrialEvents"]
