"""The preprocessing of array data (an ``.npz``, digits, MNIST, diamonds), stored with the student.

Array sources are scaled as :func:`~raykd.data.splits.build_dataset` states:
``((x / divisor) - mean) / std``, in float32, with ``mean`` and ``std`` fixed by the dataset
(MNIST: 0.1307, 0.3081 after dividing by 255) or fitted on the training split (after
``train_limit``): per channel for images ``(N, C, H, W)``, per column for rows ``(N, D)``.
:class:`ArrayPrep` is that record: ``preprocessing.json`` in the job directory and the
``preprocessing`` entry of each student checkpoint, so ``raykd predict`` on an ``.npz``
of *raw* rows (array ``x`` as the source holds it; ``y``, when present, gives the accuracy)
and ``raykd export`` apply the very same scaling. The raw rows of the built-ins are those
their loaders give: digits' 8x8 pixels 0..16, MNIST's 28x28 pixels 0..255, the 9 diamonds
features of :data:`~raykd.data.builtin.DIAMONDS_FEATURES` (log carat, ..., ordinal codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raykd.data.checks import DataError

FORMAT = "raykd-array-preprocessing"
VERSION = 1
RULE = ("((x / divisor) - mean) / std in float32; mean/std per channel of (N, C, H, W) images "
        "or per column of (N, D) rows (one value: every channel or column)")


@dataclass(frozen=True)
class ArrayPrep:
    """How raw array rows become model inputs (see the module docstring).

    Attributes:
        input_shape: One example's model input shape, e.g. ``(1, 8, 8)`` or ``(9,)``.
        divisor: Raw values are divided by it first.
        mean: Subtracted next: one value per channel/column, or one for all.
        std: Divided by last, like ``mean``.
        num_classes: The number of classes.
        class_names: Class ``i``'s name, when the classes have names.
        fitted_on: Where ``mean``/``std`` came from.
    """

    input_shape: tuple[int, ...]
    divisor: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    fitted_on: str = ""

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float32 arrays shaped to broadcast over ``(N, *input_shape)``."""
        shape = ((1, len(self.mean), 1, 1) if len(self.input_shape) == 3 else (1, len(self.mean)))
        if len(self.mean) == 1:
            shape = ()
        return (np.asarray(self.mean, dtype=np.float64).reshape(shape).astype(np.float32),
                np.asarray(self.std, dtype=np.float64).reshape(shape).astype(np.float32))

    def transform(self, x: np.ndarray, where: str = "the rows") -> np.ndarray:
        """Raw rows ``(N, *input_shape)`` (or ``(N, H, W)`` for one channel, or any shape of
        the same size per row) as model inputs, float32, exactly as at training.

        Raises:
            DataError: For values that are not finite numbers, or rows of another size.
        """
        x = np.asarray(x)
        size = int(np.prod(self.input_shape))
        if x.dtype.kind not in "biuf" or x.ndim < 1 or int(np.prod(x.shape[1:])) != size:
            raise DataError(f"{where} hold {x.dtype} rows of shape {tuple(x.shape[1:])}; the model "
                            f"reads raw rows of shape {self.input_shape} ({size} numbers each)")
        floats = np.array(x.reshape(len(x), *self.input_shape), dtype=np.float32, order="C")
        if not np.isfinite(floats).all():
            raise DataError(f"{where} hold non-finite values (NaN or inf); give finite numbers")
        if self.divisor != 1:
            floats /= np.float32(self.divisor)
        mean, std = self.stats()
        floats -= mean
        floats /= std
        return floats

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``)."""
        return {"format": FORMAT, "version": VERSION, "input_shape": list(self.input_shape),
                "divisor": self.divisor, "mean": list(self.mean), "std": list(self.std),
                "num_classes": self.num_classes,
                "class_names": None if self.class_names is None else list(self.class_names),
                "fitted_on": self.fitted_on, "rule": RULE}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> ArrayPrep:
        """Read :meth:`to_dict`'s record back; DataError naming ``where`` when it is not one."""
        try:
            if record.get("format") != FORMAT or record.get("version") != VERSION:
                raise ValueError(f"format {record.get('format')!r} version {record.get('version')!r}")
            mean = tuple(float(v) for v in record["mean"])
            std = tuple(float(v) for v in record["std"])
            if len(mean) != len(std) or not mean or not all(s > 0 for s in std):
                raise ValueError("mean/std do not match")
            names = record.get("class_names")
            return cls(input_shape=tuple(int(v) for v in record["input_shape"]),
                       divisor=float(record["divisor"]), mean=mean, std=std,
                       num_classes=int(record["num_classes"]),
                       class_names=None if names is None else tuple(str(n) for n in names),
                       fitted_on=str(record.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: the array preprocessing record is invalid ({err})") from None
