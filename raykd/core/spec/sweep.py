"""The spec's sweep section: a Ray Tune search over the method and its hyperparameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raykd.core.spec.section import Section
from raykd.core.spec.training import MethodName

__all__ = ["BOUNDS", "ParamSpace", "SweepSpec"]

BOUNDS: dict[str, tuple[float, float, bool]] = {
    # name: (low, high, low is exclusive)
    "incorrect_weight": (0.0, 1.0, True),
    "temperature": (0.0, 100.0, True),
    "alpha": (0.0, 1.0, False),
}


class ParamSpace(Section):
    """The values one hyperparameter takes in a sweep: a list (grid/choice) or a range."""

    values: list[float] | None = Field(
        default=None, description="Explicit values (grid or choice)."
    )
    low: float | None = Field(default=None, description="Lower end of a range (random/optuna).")
    high: float | None = Field(default=None, description="Upper end of a range (random/optuna).")
    log: bool = Field(default=False, description="Sample the range on a log scale.")

    @model_validator(mode="after")
    def _one_form(self) -> ParamSpace:
        if self.values is not None:
            if not self.values:
                raise ValueError("values is empty; give at least one value")
        elif self.low is None or self.high is None:
            raise ValueError("give either values: [...] or both low and high")
        elif self.low > self.high:
            raise ValueError(f"low={self.low:g} is above high={self.high:g}")
        return self

    def bounds(self) -> tuple[float, float]:
        vals = self.values if self.values is not None else [self.low, self.high]
        return float(min(vals)), float(max(vals))  # type: ignore[type-var]


class SweepSpec(Section):
    """A Ray Tune search over W, T, alpha and the method; the base is ``methods[0]``."""

    searcher: Literal["grid", "random", "optuna"] = Field(
        default="grid",
        description="grid (every combination), random, or optuna (TPE; needs optuna)."
    )
    scheduler: Literal["fifo", "asha"] = Field(
        default="fifo", description="asha stops weak trials early."
    )
    num_samples: int = Field(
        default=1, ge=1, le=10_000,
        description="Trials for random/optuna; repeats of the grid for grid."
    )
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, le=1024,
        description="Trials at once; default follows the cluster's CPUs."
    )
    time_budget_s: float | None = Field(
        default=None, gt=0, description="Stop starting trials after this."
    )
    method: list[MethodName] | None = Field(
        default=None, min_length=1, description="Methods to search."
    )
    incorrect_weight: ParamSpace | None = Field(default=None, description="W, within (0, 1].")
    temperature: ParamSpace | None = Field(default=None, description="T, within (0, 100].")
    alpha: ParamSpace | None = Field(default=None, description="alpha, within [0, 1].")
    final_retrain: bool = Field(
        default=True, description="Retrain the best configuration on train+val and test it."
    )

    @model_validator(mode="after")
    def _in_bounds(self) -> SweepSpec:
        for name, (low, high, open_low) in BOUNDS.items():
            space: ParamSpace | None = getattr(self, name)
            if space is None:
                continue
            lo, hi = space.bounds()
            if lo < low or (open_low and lo <= low) or hi > high:
                interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
                raise ValueError(f"{name} spans [{lo:g}, {hi:g}], outside {name}'s range "
                                 f"{interval}")
            if self.searcher == "grid" and space.values is None:
                raise ValueError(f"{name}: the grid searcher needs values: [...], not a range")
            if space.log and lo <= 0:
                raise ValueError(f"{name}: log scale needs low > 0")
        if not any((self.method, self.incorrect_weight, self.temperature, self.alpha)):
            raise ValueError("the sweep searches nothing; give method, incorrect_weight, "
                             "temperature or alpha")
        return self
