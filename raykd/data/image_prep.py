"""The fitted record of an image dataset: :class:`ImagePrep` (image size, channel mode,
per-channel mean and standard deviation, class names), written as ``preprocessing.json`` in
the job directory and as the ``preprocessing`` entry of each student checkpoint, read back by
``raykd predict``; its :meth:`ImagePrep.transform` decodes and standardizes images by the
rules of :mod:`raykd.data.images`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raykd.data.checks import DataError
from raykd.data.image_decode import Item, check_budget, chunked, decode_images, standardize

FORMAT = "raykd-image-preprocessing"
VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImagePrep:
    """How images become model inputs (see the module docstring).

    ``image_column`` and ``label_column`` are set for a Parquet file of encoded images
    (:mod:`raykd.data.image_parquet`), None for an image folder.
    """

    image_size: tuple[int, int]
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    fitted_on: str = ""
    ignored: tuple[str, ...] = ()
    image_column: str | None = None
    label_column: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``)."""
        record = {"format": FORMAT, "version": VERSION, "image_size": list(self.image_size),
                  "mode": self.mode, "mean": list(self.mean), "std": list(self.std),
                  "class_names": list(self.class_names), "fitted_on": self.fitted_on,
                  "ignored": list(self.ignored), "suffixes": list(IMAGE_SUFFIXES)}
        if self.image_column is not None:
            record |= {"image_column": self.image_column, "label_column": self.label_column}
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> ImagePrep:
        """Read :meth:`to_dict`'s record back; DataError naming ``where`` when it is not one."""
        try:
            if record.get("format") != FORMAT:
                raise ValueError(f"format is {record.get('format')!r}, not {FORMAT!r}")
            h, w = (int(v) for v in record["image_size"])
            mode = str(record["mode"])
            if mode not in ("L", "RGB"):
                raise ValueError(f"mode {mode!r}")
            mean = tuple(float(v) for v in record["mean"])
            std = tuple(float(v) for v in record["std"])
            if len(mean) != len(std) or len(mean) != (1 if mode == "L" else 3):
                raise ValueError("mean/std do not match the channels")
            names = tuple(str(n) for n in record["class_names"])
            column, label = record.get("image_column"), record.get("label_column")
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where}: the image preprocessing record is invalid ({err})") from None
        return cls(image_size=(h, w), mode=mode, mean=mean, std=std, class_names=names,
                   fitted_on=str(record.get("fitted_on", "")),
                   image_column=None if column is None else str(column),
                   label_column=None if label is None else str(label))

    def transform_items(self, chunks: Any, n: int, where: str) -> np.ndarray:
        """Decode ``n`` images from ``chunks`` of ``(name, payload)`` by this record's mode and
        size, then standardize: float32 ``(n, C, H, W)``."""
        check_budget(n, self.input_shape, where)
        if n == 0:
            return np.zeros((0, *self.input_shape), dtype=np.float32)
        decoded = decode_images(chunks, n, mode=self.mode, size=self.image_size, where=where)
        return standardize(decoded.pixels, self.mean, self.std)

    def transform(self, files: list[Path]) -> np.ndarray:
        """Decode, convert, resize and standardize ``files``: float32 ``(N, C, H, W)``."""
        return self.transform_items(chunked(file_items(files)), len(files), "the images")


def file_items(files: list[Path]) -> list[Item]:
    """``(name, payload)`` of each file for :func:`~raykd.data.image_decode.decode_images`."""
    return [(repr(str(f)), f) for f in files]
