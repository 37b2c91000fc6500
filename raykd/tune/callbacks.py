"""Tune callbacks: one ``trial`` event per trial report, appended to the job's event stream
(driver side)."""

from __future__ import annotations

from typing import Any

from ray import tune

from raykd.core.events import Trial
from raykd.tune.space import SWEPT, resolved

REPORTED = ("val_accuracy", "val_f1", "val_exact", "train_loss", "epoch", "training_iteration",
            "trial_seconds")  # val_f1/val_exact: span sweeps (SQuAD, percent)


class TrialEvents(tune.Callback):
    """Appends a :class:`raykd.core.events.Trial` event for every result Tune receives."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def _emit(self, trial: Any, result: dict[str, Any], done: bool) -> None:
        config = {k: v for k, v in resolved(trial.config or {}).items() if k in SWEPT}
        metrics = {k: float(v) for k, v in result.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)
                   and k in REPORTED}
        self.sink.emit(Trial(trial_id=str(trial.trial_id), config=config, metrics=metrics,
                             done=done))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self._emit(trial, result, done=False)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._emit(trial, trial.last_result or {}, done=True)
