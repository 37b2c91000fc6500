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
  expanded).
- **values**: 8-bit values divided by 255 (so in [0, 1]), then standardized per channel
  with the mean and standard deviation of the training split (after ``train_limit``).

Decoding is eager: the whole folder is decoded into memory once, as float32
``(N, C, H, W)``; a folder above :data:`MAX_DECODED_BYTES` decoded is refused with a
DataError (lower ``data.image_size``, or use fewer images). Lazy decoding of huge
folders and Parquet columns of encoded images are not supported yet.

:class:`ImagePrep` is the fitted record: ``preprocessing.json`` in the job directory and
the ``preprocessing`` entry of each student checkpoint, read back by ``raykd predict``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from raykd.data.checks import DataError
from raykd.data.files import describe_error
from raykd.data.splits import Dataset, Preprocessing, RawData, build_dataset, dataset_indices

FORMAT = "raykd-image-preprocessing"
VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_DECODED_BYTES = 1 << 30
"""In-memory budget of one decoded folder: 1 GiB of float32 ``(N, C, H, W)``."""
SHOWN_IGNORED = 20
IDENTITY = Preprocessing(divisor=1.0, mean=0.0, std=1.0)


@dataclass(frozen=True)
class ImagePrep:
    """How image files become model inputs (see the module docstring)."""

    image_size: tuple[int, int]
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    fitted_on: str = ""
    ignored: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``preprocessing.json``)."""
        return {"format": FORMAT, "version": VERSION, "image_size": list(self.image_size),
                "mode": self.mode, "mean": list(self.mean), "std": list(self.std),
                "class_names": list(self.class_names), "fitted_on": self.fitted_on,
                "ignored": list(self.ignored), "suffixes": list(IMAGE_SUFFIXES)}

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
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where}: the image preprocessing record is invalid ({err})") from None
        return cls(image_size=(h, w), mode=mode, mean=mean, std=std, class_names=names,
                   fitted_on=str(record.get("fitted_on", "")))

    def transform(self, files: list[Path]) -> np.ndarray:
        """Decode, convert, resize and standardize ``files``: float32 ``(N, C, H, W)``."""
        check_budget(len(files), self.input_shape, "the images")
        x = np.stack([decode(f, self.mode, self.image_size) for f in files]) if files else \
            np.zeros((0, *self.input_shape), dtype=np.uint8)
        return standardize(x, self.mean, self.std)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_folder(root: Path) -> tuple[tuple[str, ...], list[list[Path]], list[str]]:
    """``(class names, image files per class, ignored files)`` of ``root`` (see the rules)."""
    where = repr(str(root))
    classes = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.name)
    ignored = sorted(str(f.relative_to(root)) for f in root.iterdir() if f.is_file())
    if len(classes) < 2:
        raise DataError(f"image folder {where} has {len(classes)} class folder(s); expected "
                        "root/<class name>/*.png|jpg|jpeg with at least 2 classes")
    files = []
    for d in classes:
        inside = sorted((f for f in d.iterdir() if f.is_file()), key=lambda f: f.name)
        images = [f for f in inside if is_image(f)]
        ignored += [str(f.relative_to(root)) for f in inside if f not in images]
        if not images:
            raise DataError(f"class folder {str(d)!r} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add some or remove the folder")
        files.append(images)
    return tuple(d.name for d in classes), files, ignored


def header(path: Path) -> tuple[str, tuple[int, int]]:
    """Pillow mode and ``(height, width)`` of one file, reading its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, (im.height, im.width)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not an image
        raise DataError(f"could not read image {str(path)!r}: {describe_error(exc)}") from None


def decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One file as uint8 ``(C, H, W)`` in ``mode`` (``L`` or ``RGB``), resized to ``size``."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im = opened.convert(mode)
            if (im.height, im.width) != size:
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise DataError(f"could not decode image {str(path)!r}: {describe_error(exc)}") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def check_budget(n: int, shape: tuple[int, ...], where: str) -> None:
    """DataError when ``n`` images of ``shape`` exceed :data:`MAX_DECODED_BYTES` as float32."""
    need = n * int(np.prod(shape)) * 4
    if need > MAX_DECODED_BYTES:
        raise DataError(
            f"{where}: {n} images of {shape} take {need / 2**30:.1f} GiB decoded, above the "
            f"in-memory budget of {MAX_DECODED_BYTES / 2**30:.0f} GiB; set a smaller "
            "data.image_size or use fewer images (lazy decoding is not supported yet)")


def standardize(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(x / 255 - mean) / std`` per channel, float32."""
    out = x.astype(np.float32) / np.float32(255.0)
    out -= np.asarray(mean, dtype=np.float32)[None, :, None, None]
    out /= np.asarray(std, dtype=np.float32)[None, :, None, None]
    return np.ascontiguousarray(out)


def load_image_folder(root: Path, *, image_size: tuple[int, int] | None, val_fraction: float,
                      test_fraction: float, seed: int, train_limit: int | None) -> Dataset:
    """Scan, decode, split by seed, fit mean/std on the training images: a Dataset."""
    where = f"image folder {str(root)!r}"
    class_names, per_class, ignored = scan_folder(root)
    files = [f for group in per_class for f in group]
    labels = np.concatenate([np.full(len(g), i, dtype=np.int64) for i, g in enumerate(per_class)])
    heads = [header(f) for f in files]
    mode = "L" if all(m in GRAYSCALE_MODES for m, _ in heads) else "RGB"
    size = tuple(image_size) if image_size is not None else heads[0][1]
    shape = (1 if mode == "L" else 3, *size)
    check_budget(len(files), shape, where)
    raw = np.stack([decode(f, mode, size) for f in files])  # type: ignore[arg-type]
    train_idx, _, _ = dataset_indices(len(files), carve_test=True, val_fraction=val_fraction,
                                      test_fraction=test_fraction, seed=seed,
                                      train_limit=train_limit, where=where)
    train = raw[train_idx].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(float(s) if s > 1e-12 else 1.0 for s in train.std(axis=(0, 2, 3)))
    prep = ImagePrep(image_size=size, mode=mode, mean=mean, std=std,  # type: ignore[arg-type]
                     class_names=class_names, ignored=tuple(ignored[:SHOWN_IGNORED]),
                     fitted_on=f"the training split: {len(train_idx)} images (data.seed {seed})")
    data = build_dataset(root.name, RawData(x=standardize(raw, mean, std), y=labels, x_test=None,
                                            y_test=None, where=where, label_name="class folders",
                                            preprocessing=IDENTITY, class_names=class_names),
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         train_limit=train_limit)
    return replace(data, num_classes=len(class_names), image=prep)


def folder_files(folder: Path) -> tuple[list[Path], list[str | None]]:
    """Images to predict: ``folder/*.png|jpg|jpeg`` (no label) and ``folder/<class>/*`` (label:
    the sub-folder's name), sorted; DataError when there are none."""
    if not folder.is_dir():
        raise DataError(f"{str(folder)!r} is not a folder of images")
    files: list[Path] = sorted(f for f in folder.iterdir() if is_image(f))
    labels: list[str | None] = [None] * len(files)
    for d in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        inside = sorted(f for f in d.iterdir() if is_image(f))
        files += inside
        labels += [d.name] * len(inside)
    if not files:
        raise DataError(f"folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)}) in it "
                        "or in its sub-folders")
    return files, labels
