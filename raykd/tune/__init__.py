"""Ray Tune sweeps over the method, W, T and alpha, on teacher logits computed once.

    from raykd import load_spec
    from raykd.tune import print_sweep, run_sweep
    print_sweep(run_sweep(load_spec("digits-sweep")))

``raykd sweep SPEC`` (or ``raykd run`` on a spec with a ``sweep:`` section) calls these.

``run_sweep`` loads its module when first asked for: a trial process unpickles
``raykd.tune.trial``, which imports this package, and would otherwise import the driver's
whole engine (data stages, teachers: ~40 modules, a second on a loaded 2-CPU machine) that
a trial never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raykd.tune.results import print_sweep

if TYPE_CHECKING:
    from raykd.tune.driver import run_sweep

__all__ = ["print_sweep", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from raykd.tune.driver import run_sweep

        return run_sweep
    raise AttributeError(f"module 'raykd.tune' has no attribute {name!r}")
