"""Decoding images in bounded chunks into one preallocated uint8 array.

Images come as chunks (at most :data:`CHUNK` each) of ``(name, payload)`` pairs: the
payload is a file path or encoded bytes (PNG/JPEG, any format Pillow reads); the name is
how an error names the image (a file, or a Parquet file's row). Each image is opened,
converted, resized, copied into the array and closed before the next is opened: at most
one image is a Pillow object at any time, and nothing is decoded before the job's arrays
are built. Chunks are pulled one at a time, so a source that reads lazily (a Parquet
file's row batches) holds one chunk of encoded bytes at a time.

The conversion rule (the same at training and at ``raykd predict`` time):

- an image is *grayscale* when its Pillow mode is in :data:`GRAYSCALE_MODES`; it is
  converted to ``L`` and, in an RGB dataset, repeated across the 3 channels (what
  Pillow's ``L`` -> ``RGB`` conversion does);
- any other image is converted to ``RGB`` (alpha dropped, palettes expanded), or to
  ``L`` (luma) when the dataset is grayscale;
- every image is resized (bilinear) to ``(height, width)``.

With ``mode=None`` (training) the dataset is grayscale until its first non-grayscale
image, and RGB from then on (the images decoded so far are repeated across 3 channels):
grayscale exactly when every image is. With ``size=None`` the first image's size is taken.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from raykd.data.checks import DataError, describe_error
from raykd.data.paths import read_data

CHUNK = 256
"""Images per chunk: what a lazy source reads (encoded) and hands over at once."""
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_DECODED_BYTES = 1 << 30
"""In-memory budget of one decoded dataset: 1 GiB of float32 ``(N, C, H, W)``."""

Payload = Path | bytes
Item = tuple[str, Payload]
T = TypeVar("T")


@dataclass
class Decoded:
    """Decoded images: uint8 ``pixels`` ``(N, C, H, W)``, their ``mode`` (``L``/``RGB``), ``size``."""

    pixels: np.ndarray
    mode: str
    size: tuple[int, int]


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def channels(mode: str) -> int:
    return 1 if mode == "L" else 3


def check_budget(n: int, shape: tuple[int, ...], where: str) -> None:
    """DataError when ``n`` images of ``shape`` exceed :data:`MAX_DECODED_BYTES` as float32."""
    need = n * int(np.prod(shape)) * 4
    if need > MAX_DECODED_BYTES:
        raise DataError(
            f"{where}: {n} images of {shape} take {need / 2**30:.1f} GiB decoded, above the "
            f"in-memory budget of {MAX_DECODED_BYTES / 2**30:.0f} GiB; set a smaller "
            "data.image_size or use fewer images")


def _open(name: str, payload: Payload) -> Any:
    """The Pillow image of one item (lazy: header only); DataError naming it when unreadable."""
    from PIL import Image

    data = read_data(payload, "image file") if isinstance(payload, Path) else payload
    try:
        return Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any failure means the data is not an image
        raise DataError(f"could not read image {name}: {describe_error(exc)}") from None


def _pixels(image: Any, mode: str, size: tuple[int, int], name: str) -> np.ndarray:
    """One opened image as uint8 ``(C, H, W)`` by the conversion rule."""
    from PIL import Image

    try:
        gray = image.mode in GRAYSCALE_MODES
        converted = image.convert("L" if gray or mode == "L" else "RGB")
        if (converted.height, converted.width) != size:
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(converted, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise DataError(f"could not decode image {name}: {describe_error(exc)}") from None
    if array.ndim == 2:
        return np.broadcast_to(array, (channels(mode), *array.shape))
    return array.transpose(2, 0, 1)


def decode_images(chunks: Iterable[Sequence[Item]], n: int, *, mode: str | None,
                  size: tuple[int, int] | None, where: str) -> Decoded:
    """Decode the ``n`` images of ``chunks`` into uint8 ``(n, C, H, W)`` (see the module rules).

    Raises:
        DataError: An image that cannot be read or decoded (named), no images, a count
            other than ``n``, or more than :data:`MAX_DECODED_BYTES` decoded.
    """
    if n < 1:
        raise DataError(f"{where} has no images")
    pixels = np.empty((0,), dtype=np.uint8)
    hw, current, done = size or (0, 0), mode or "", 0
    for chunk in chunks:
        for name, payload in chunk:
            if done >= n:
                raise DataError(f"{where} holds more images than the {n} expected")
            image = _open(name, payload)
            try:
                gray = image.mode in GRAYSCALE_MODES
                if done == 0:
                    hw = size or (image.height, image.width)
                    current = mode or ("L" if gray else "RGB")
                    check_budget(n, (channels(current), *hw), where)
                    pixels = np.empty((n, channels(current), *hw), dtype=np.uint8)
                elif mode is None and current == "L" and not gray:
                    current = "RGB"  # the first colour image: the dataset is RGB
                    check_budget(n, (3, *hw), where)
                    pixels = np.repeat(pixels, 3, axis=1)
                pixels[done] = _pixels(image, current, hw, name)
            finally:
                image.close()
            done += 1
    if done != n:
        raise DataError(f"{where} holds {done} images, not the {n} expected")
    return Decoded(pixels=pixels, mode=current, size=hw)


def standardize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(x / 255 - mean) / std`` per channel, float32, computed :data:`CHUNK` images at a time."""
    out = np.empty(pixels.shape, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    s = np.asarray(std, dtype=np.float32)[None, :, None, None]
    for start in range(0, len(pixels), CHUNK):
        part = pixels[start:start + CHUNK].astype(np.float32) / np.float32(255.0)
        part -= m
        part /= s
        out[start:start + CHUNK] = part
    return out


def channel_stats(pixels: np.ndarray, rows: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``pixels[rows] / 255`` (two passes, float64,
    :data:`CHUNK` images at a time); a zero deviation becomes 1."""
    count = len(rows) * pixels.shape[2] * pixels.shape[3]
    if count == 0:
        raise DataError("the training split has no images")
    total = np.zeros(pixels.shape[1])
    for start in range(0, len(rows), CHUNK):
        total += (pixels[rows[start:start + CHUNK]] / 255.0).sum(axis=(0, 2, 3))
    mean = total / count
    squares = np.zeros(pixels.shape[1])
    for start in range(0, len(rows), CHUNK):
        part = pixels[rows[start:start + CHUNK]] / 255.0 - mean[None, :, None, None]
        squares += (part * part).sum(axis=(0, 2, 3))
    std = np.sqrt(squares / count)
    return (tuple(float(v) for v in mean),
            tuple(float(v) if v > 1e-12 else 1.0 for v in std))
