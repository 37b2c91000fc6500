"""Image folders as datasets: ``root/<class name>/*.png|jpg|jpeg``, decoded with Pillow.

The rules (the same at training time and at ``raykd predict`` time):

- **classes**: the sub-folders of ``root`` (hidden ones, starting with ``.``, skipped),
  sorted by name; class ``i`` is the ``i``-th name. Each needs at least one image, and
  there must be at least two classes.
- **files**: ``.png``, ``.jpg`` and ``.jpeg`` (any case), sorted by name within a class;
  other files, hidden files and files directly in ``root`` are ignored and listed in the
  job's log and ``preprocessing.json``. A file that Pillow cannot read is a
  :class:`~raykd.data.checks.DataError` naming it.
- **size**: every image is resized (bilinear) to ``image_size`` ``(height, width)``;
  default: the size of the first image (first class, first file).
- **channels**: grayscale (1 channel) when every image is grayscale (Pillow modes ``1``,
  ``L``, ``LA``, ``I``, ``I;16``, ``F``), else RGB (3 channels; alpha dropped, palettes
  expanded; grayscale images repeated across the channels), see
  :mod:`raykd.data.image_decode`.
- **values**: 8-bit values divided by 255 (so in [0, 1]), then standardized per channel
  with the mean and standard deviation of the training split (after ``train_limit``).

Listing a folder opens no file. Every folder listed and every image read is checked
against the data roots once opened (:mod:`raykd.data.paths`): an image that is a link to a
file outside them is refused by name. The images are decoded when the job's arrays are built,
in chunks of :data:`~raykd.data.image_decode.CHUNK`, one Pillow image open at a time,
into one uint8 array, then standardized chunk by chunk into float32 ``(N, C, H, W)``; a
dataset above :data:`~raykd.data.image_decode.MAX_DECODED_BYTES` decoded is refused with
a DataError (lower ``data.image_size``, or use fewer images). Parquet columns of encoded
images follow the same rules (:mod:`raykd.data.image_parquet`).

:class:`~raykd.data.image_prep.ImagePrep` is the fitted record: ``preprocessing.json`` in the
job directory and the ``preprocessing`` entry of each student checkpoint, read back by
``raykd predict``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from raykd.data.checks import DataError
from raykd.data.dataset import Dataset, Preprocessing, RawData
from raykd.data.image_decode import Decoded, channel_stats, chunked, decode_images, standardize
from raykd.data.image_prep import IMAGE_SUFFIXES, ImagePrep, file_items
from raykd.data.paths import list_dir
from raykd.data.splits import build_dataset, dataset_indices

SHOWN_IGNORED = 20
IDENTITY = Preprocessing(divisor=1.0, mean=0.0, std=1.0)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_folder(root: Path) -> tuple[tuple[str, ...], list[list[Path]], list[str]]:
    """``(class names, image files per class, ignored files)`` of ``root`` (see the rules)."""
    where = repr(str(root))
    entries = list_dir(root)
    classes = sorted((d for d in entries if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.name)
    ignored = sorted(str(f.relative_to(root)) for f in entries if f.is_file())
    if len(classes) < 2:
        raise DataError(f"image folder {where} has {len(classes)} class folder(s); expected "
                        "root/<class name>/*.png|jpg|jpeg with at least 2 classes")
    files = []
    for d in classes:
        inside = [f for f in list_dir(d, "class folder") if f.is_file()]  # sorted by name
        images = [f for f in inside if is_image(f)]
        ignored += [str(f.relative_to(root)) for f in inside if f not in images]
        if not images:
            raise DataError(f"class folder {str(d)!r} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add some or remove the folder")
        files.append(images)
    return tuple(d.name for d in classes), files, ignored


def folder_examples(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[str]]:
    """``(class names, files, labels, ignored)`` of ``root`` in the dataset's order."""
    class_names, per_class, ignored = scan_folder(root)
    files = [f for group in per_class for f in group]
    labels = np.concatenate([np.full(len(g), i, dtype=np.int64) for i, g in enumerate(per_class)])
    return class_names, files, labels, ignored


def fit_images(decoded: Decoded, labels: np.ndarray, class_names: tuple[str, ...], *, name: str,
               where: str, val_fraction: float, test_fraction: float, seed: int,
               train_limit: int | None, ignored: tuple[str, ...] = (), dropped: str = "",
               image_column: str | None = None, label_column: str | None = None) -> Dataset:
    """Split decoded images by seed, fit mean/std on the training images, standardize: a Dataset."""
    train_idx, _, _ = dataset_indices(len(labels), carve_test=True, val_fraction=val_fraction,
                                      test_fraction=test_fraction, seed=seed,
                                      train_limit=train_limit, where=where)
    mean, std = channel_stats(decoded.pixels, train_idx)
    prep = ImagePrep(image_size=decoded.size, mode=decoded.mode, mean=mean, std=std,
                     class_names=class_names, ignored=ignored[:SHOWN_IGNORED],
                     fitted_on=f"the training split: {len(train_idx)} images (data.seed {seed})"
                     + dropped, image_column=image_column, label_column=label_column)
    x = standardize(decoded.pixels, mean, std)
    decoded.pixels = np.empty((0,), dtype=np.uint8)  # the caller's copy is not needed any more
    label_name = "class folders" if image_column is None else f"column {label_column!r}"
    data = build_dataset(name, RawData(x=x, y=labels, x_test=None, y_test=None, where=where,
                                       label_name=label_name, preprocessing=IDENTITY,
                                       class_names=class_names),
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         train_limit=train_limit)
    return replace(data, num_classes=len(class_names), image=prep)


def load_image_folder(root: Path, *, image_size: tuple[int, int] | None, val_fraction: float,
                      test_fraction: float, seed: int, train_limit: int | None) -> Dataset:
    """List the folder, decode it in chunks, split by seed, fit mean/std on the training images."""
    where = f"image folder {str(root)!r}"
    class_names, files, labels, ignored = folder_examples(root)
    decoded = decode_images(chunked(file_items(files)), len(files), mode=None, size=image_size,
                            where=where)
    return fit_images(decoded, labels, class_names, name=root.name, where=where,
                      val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                      train_limit=train_limit, ignored=tuple(ignored))


def folder_files(folder: Path) -> tuple[list[Path], list[str | None]]:
    """Images to predict: ``folder/*.png|jpg|jpeg`` (no label) and ``folder/<class>/*`` (label:
    the sub-folder's name), sorted; DataError when there are none."""
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is not a folder of images")
    entries = list_dir(folder, "folder")
    files: list[Path] = sorted(f for f in entries if is_image(f))
    labels: list[str | None] = [None] * len(files)
    for d in sorted(d for d in entries if d.is_dir() and not d.name.startswith(".")):
        inside = sorted(f for f in list_dir(d, "folder") if is_image(f))
        files += inside
        labels += [d.name] * len(inside)
    if not files:
        raise DataError(f"folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)}) in it "
                        "or in its sub-folders")
    return files, labels
