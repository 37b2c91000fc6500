"""Ray Tune sweeps over the method, W, T and alpha, on teacher logits computed once.

    from raykd import load_spec
    from raykd.tune import print_sweep, run_sweep
    print_sweep(run_sweep(load_spec("digits-sweep")))

``raykd sweep SPEC`` (or ``raykd run`` on a spec with a ``sweep:`` section) calls these.
"""

from raykd.tune.driver import run_sweep
from raykd.tune.results import print_sweep

__all__ = ["print_sweep", "run_sweep"]
