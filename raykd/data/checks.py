"""The checks of what a loader or a caller hands to :mod:`raykd.data`: fractions, seeds,
limits, features and labels. Each bad value raises :class:`DataError` with a one-line
message naming the field, the value and the fix; :func:`describe_error` and
:func:`shown_names` word what a message repeats of an exception or of a file's names.
Imports numpy only.
"""

from __future__ import annotations

import re
from numbers import Integral, Real

import numpy as np

from raykd.core.errors import UserError

MAX_FRACTION = 0.9
"""Largest accepted ``val_fraction`` or ``test_fraction``."""

MAX_NUM_CLASSES = 10_000
"""Largest accepted ``max(label) + 1``; guards against id-like labels."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest feature magnitude accepted: features are converted to ``float32``."""

MAX_NAMES_SHOWN = 20
MAX_NAME_CHARS = 24
"""Longest name an error message repeats from a file (a column, an array): longer ones,
and ones that are not plain names, are counted, not shown (see :func:`shown_names`)."""
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ .\-]*")


class DataError(UserError, ValueError):
    """Bad data input; the one-line message names the field, the value and the fix."""


def describe_error(exc: BaseException) -> str:
    """One-line, bounded description of an exception."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def is_plain_name(name: str) -> bool:
    """Whether a name read from a file may be repeated in a message: a letter or ``_``, then
    letters, digits, ``_``, ``-``, ``.`` or spaces, at most :data:`MAX_NAME_CHARS` in all."""
    return len(name) <= MAX_NAME_CHARS and PLAIN_NAME.fullmatch(name) is not None


def shown_names(names: list[str]) -> str:
    """Names read from a file, for an error message, without repeating the file's content.

    A file that is not what it should be (a token file, ``/proc/self/environ``) has a first
    line that a parser takes for column names: only the plain names (:func:`is_plain_name`),
    at most :data:`MAX_NAMES_SHOWN`, are quoted; the others are counted.
    """
    plain = [n for n in names if is_plain_name(n)]
    more = len(plain) - MAX_NAMES_SHOWN
    shown = ", ".join(repr(name) for name in plain[:MAX_NAMES_SHOWN])
    text = f"[{shown}{f', ... {more} more' if more > 0 else ''}]"
    hidden = len(names) - len(plain)
    if hidden:
        text += (f" ({len(names)} in all; {hidden} not shown: not a plain name of at most "
                 f"{MAX_NAME_CHARS} characters)")
    return text


def check_fraction(name: str, value: object) -> float:
    """Check that a split fraction is a number in ``[0, MAX_FRACTION]``."""
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) <= MAX_FRACTION:  # type: ignore[arg-type]
        raise DataError(
            f"{name}={value!r} is out of range; expected a number in [0, {MAX_FRACTION}]"
        )
    return float(value)  # type: ignore[arg-type]


def check_seed(seed: object) -> int:
    """Check that a seed is a non-negative integer."""
    if not isinstance(seed, Integral) or isinstance(seed, bool) or int(seed) < 0:
        raise DataError(f"seed={seed!r} is invalid; expected an integer >= 0")
    return int(seed)


def check_train_limit(train_limit: object) -> int | None:
    """Check that a training-set limit is None or a positive integer."""
    if train_limit is None:
        return None
    ok = isinstance(train_limit, Integral) and not isinstance(train_limit, bool)
    if not ok or int(train_limit) < 1:  # type: ignore[call-overload]
        raise DataError(
            f"train_limit={train_limit!r} is invalid; "
            "expected None (all) or an integer >= 1"
        )
    return int(train_limit)  # type: ignore[call-overload]


def check_features(x: np.ndarray, where: str, name: str = "features") -> np.ndarray:
    """Check feature dtype, rank and finiteness; add a channel axis to ``(N, H, W)``.

    Returns:
        ``x`` as ``(N, D)`` or ``(N, C, H, W)``.
    """
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name} in {where} have dtype {x.dtype}; expected numbers")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{name} in {where} have shape {x.shape}; expected (N, D), (N, H, W) "
            "or (N, C, H, W)"
        )
    if 0 in x.shape[1:]:
        raise DataError(
            f"{name} in {where} have shape {x.shape}; each example needs at least one value"
        )
    if x.dtype.kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(
                f"{name} in {where} contain {bad} non-finite values (NaN or inf); "
                "features must be finite"
            )
    _check_float32_range(x, where, name)
    return x[:, None] if x.ndim == 3 else x


def _check_float32_range(x: np.ndarray, where: str, name: str) -> None:
    """Features become float32; wider floats beyond its range would turn into inf."""
    if x.size == 0 or x.dtype.kind != "f" or x.dtype.itemsize <= 4:
        return  # every integer type and float16/32 fit
    largest = max(abs(float(x.max())), abs(float(x.min())))  # no |x| copy of a large array
    if largest > FLOAT32_MAX:
        raise DataError(
            f"{name} in {where} reach magnitude {largest:.3g}; features must fit float32 "
            f"(|value| <= {FLOAT32_MAX:.3g}); rescale them"
        )


def check_labels(y: np.ndarray, where: str, name: str = "labels") -> np.ndarray:
    """Check that labels are non-negative integers ``0..C-1``.

    Integral floats (``1.0``) and booleans are accepted.

    Returns:
        The labels as ``int64``.
    """
    if y.ndim != 1:
        raise DataError(f"{name} in {where} have shape {y.shape}; expected (N,)")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.floor(y))
        if bad.any():
            raise DataError(
                f"{name} in {where} must be integers 0..C-1; found {int(bad.sum())} "
                f"non-integer values, e.g. {y[bad][0]!r}"
            )
    elif y.dtype.kind not in "biu":
        example = f", e.g. {y[0]!r}" if len(y) else ""
        raise DataError(
            f"{name} in {where} must be integers 0..C-1; got dtype {y.dtype}{example}"
        )
    top = y.max().item() if len(y) else 0
    if top >= MAX_NUM_CLASSES:  # before the int64 cast, which would wrap huge values
        shown = int(top) if float(top) < 2**63 else f"{float(top):g}"
        raise DataError(
            f"{name} in {where} go up to {shown}; labels must be 0..C-1 with C <= "
            f"{MAX_NUM_CLASSES}"
        )
    labels = y.astype(np.int64)
    negative = int((labels < 0).sum())
    if negative:
        raise DataError(
            f"{name} in {where} must be integers 0..C-1; found {negative} negative "
            f"labels (min {int(labels.min())})"
        )
    return labels
