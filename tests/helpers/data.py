"""Files a user might bring, made here: digit images in class folders and a weather table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NAMES = {0: "zero", 1: "one", 2: "two"}


def digit_folder(
    root: Path,
    *,
    per_class: int = 40,
    start: int = 0,
    size: int = 16,
    rgb: bool = False,
    flat: bool = False,
) -> Path:
    """scikit-learn's digits 0, 1, 2 as PNGs of ``size`` x ``size``: ``root/<name>/<i>.png``
    (or all directly in ``root`` with ``flat``), ``per_class`` per class from ``start`` on."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for label, name in NAMES.items():
        folder = root if flat else root / name
        folder.mkdir(exist_ok=True)
        images = digits.images[digits.target == label][start : start + per_class]
        for i, pixels in enumerate(images):
            im = Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L")
            im = im.resize((size, size), Image.Resampling.NEAREST)
            (im.convert("RGB") if rgb else im).save(folder / f"{name}-{start + i:03d}.png")
    return root


def weather_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A table a user might bring: an index column, text classes, categories, gaps."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["oslo", "rome", "lima"], size=n)
    temp = rng.normal(15, 8, size=n) + (city == "rome") * 10
    wind = rng.gamma(2.0, 3.0, size=n)
    label = np.where(temp > 20, "hot", np.where(temp < 8, "cold", "mild"))
    frame = pd.DataFrame(
        {
            "Unnamed: 0": np.arange(1, n + 1),
            "city": city,
            "temp": temp,
            "wind": wind,
            "sky": rng.choice(["sun", "rain", "fog"], size=n),
            "outlook": label,
        }
    )
    frame.loc[::17, "wind"] = np.nan
    frame.loc[::23, "sky"] = None
    return frame


def digit_parquet(folder: Path, path: Path, *, struct: bool = False) -> Path:
    """The PNGs of ``digit_folder`` as a Parquet file, rows shuffled: ``image`` (the encoded
    bytes, or Hugging Face-style structs ``{bytes, path}``), ``label`` (the class name as
    text) and ``note``, a column that is neither."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*/*.png"))
    order = np.random.default_rng(0).permutation(len(files))
    encoded = [files[i].read_bytes() for i in order]
    images = (
        pa.array([{"bytes": b, "path": files[i].name} for b, i in zip(encoded, order, strict=True)])
        if struct
        else pa.array(encoded, type=pa.binary())
    )
    table = pa.table(
        {
            "image": images,
            "label": [files[i].parent.name for i in order],
            "note": [f"scan {i}" for i in order],
        }
    )
    pq.write_table(table, path, row_group_size=7)
    return path
