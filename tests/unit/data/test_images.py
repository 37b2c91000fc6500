"""An image folder a user brings (``root/<class>/*.png``): the rules of
:mod:`raykd.data.images` (classes, size, channels, standardization, clear errors), and a
job on it end to end on a real local Ray, then ``raykd predict`` on new images by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raykd.core.spec import SpecError, parse_spec
from raykd.data import DataError, load_dataset
from tests.helpers.data import digit_folder, digit_parquet


def test_classes_come_from_the_folder_names_sorted(tmp_path: Path) -> None:
    root = digit_folder(tmp_path / "digits", per_class=10)
    data = load_dataset(root, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert data.class_names == ("one", "two", "zero")
    assert data.num_classes == 3 and data.input_shape == (1, 16, 16) and data.is_image
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert data.image is not None and data.image.mode == "L" and data.image.image_size == (16, 16)
    # the training split is standardized by its own statistics
    assert abs(float(data.train.x.mean())) < 1e-4 and abs(float(data.train.x.std()) - 1) < 1e-3
    # the label is the folder: a "one" (a vertical stroke) is darker on the left than a "zero"
    one, zero = data.class_names.index("one"), data.class_names.index("zero")
    x, y = data.train.x, data.train.y
    assert x[y == zero][:, 0, 6:10, 2:5].mean() > x[y == one][:, 0, 6:10, 2:5].mean()


def test_image_size_and_channels_follow_the_documented_rule(tmp_path: Path) -> None:
    from PIL import Image

    root = digit_folder(tmp_path / "digits", per_class=6)
    data = load_dataset(root, image_size=(8, 12), val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (1, 8, 12)
    Image.new("RGB", (5, 7), (200, 10, 10)).save(root / "two" / "red.jpg")  # one colour image
    data = load_dataset(root, val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (3, 16, 16)
    assert data.image is not None and data.image.mode == "RGB" and len(data.image.mean) == 3


def test_other_files_are_ignored_and_listed(tmp_path: Path) -> None:
    root = digit_folder(tmp_path / "digits", per_class=6)
    (root / "README.txt").write_text("about these digits")
    (root / "one" / "notes.csv").write_text("a,b\n")
    data = load_dataset(root, val_fraction=0.2, test_fraction=0.2)
    assert data.image is not None and data.image.ignored == ("README.txt", "one/notes.csv")
    assert len(data.train) + len(data.val) + len(data.test) == 18


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = digit_folder(tmp_path / "digits", per_class=6)
    (root / "one" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"could not read image '.*one/broken\.png'"):
        load_dataset(root)


def test_a_class_folder_without_images_is_named(tmp_path: Path) -> None:
    root = digit_folder(tmp_path / "digits", per_class=6)
    (root / "three").mkdir()
    (root / "three" / "todo.txt").write_text("draw some threes")
    with pytest.raises(DataError, match=r"class folder '.*three' has no images"):
        load_dataset(root)


def test_one_class_folder_is_not_a_classification(tmp_path: Path) -> None:
    root = digit_folder(tmp_path / "digits", per_class=6)
    for name in ("one", "two"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    with pytest.raises(DataError, match="1 class folder"):
        load_dataset(root)


def test_a_folder_above_the_memory_budget_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from raykd.data import image_decode

    root = digit_folder(tmp_path / "digits", per_class=6)
    monkeypatch.setattr(image_decode, "MAX_DECODED_BYTES", 1000)
    with pytest.raises(DataError, match=r"18 images of \(1, 16, 16\).*in-memory budget"):
        load_dataset(root)


def test_image_size_on_a_non_folder_is_refused() -> None:
    with pytest.raises(DataError, match="data.image_size applies to image folders and Parquet"):
        load_dataset("digits", image_size=(8, 8))


def test_the_spec_takes_a_folder_and_an_image_size(tmp_path: Path) -> None:

    base = {"data": {"dataset": str(tmp_path), "image_size": [32, 24]},
            "teachers": [{"model": {"name": "cnn"}}], "student": {"model": {"name": "mlp"}},
            "methods": [{"method": "kd"}]}
    assert parse_spec(base).data.image_size == (32, 24)
    with pytest.raises(SpecError, match="data.image_size"):
        parse_spec({**base, "data": {"dataset": str(tmp_path), "image_size": [0, 24]}})


# --- Parquet files with a column of encoded images ---------------------------------------



def count_open_images(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count Pillow images opened, and the most open at once, from now on."""
    from PIL import Image

    seen = {"opened": 0, "open": 0, "most": 0}
    real_open = Image.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        image = real_open(*args, **kwargs)
        seen["opened"] += 1
        seen["open"] += 1
        seen["most"] = max(seen["most"], seen["open"])
        real_close = image.close

        def close() -> None:
            seen["open"] -= 1
            real_close()

        image.close = close  # type: ignore[method-assign]
        return image

    monkeypatch.setattr(Image, "open", counting_open)
    return seen


def test_a_parquet_image_column_is_a_dataset_named_by_its_labels(tmp_path: Path) -> None:
    folder = digit_folder(tmp_path / "digits", per_class=10)
    path = digit_parquet(folder, tmp_path / "digits.parquet")
    data = load_dataset(path, image_column="image", val_fraction=0.2, test_fraction=0.2, seed=0)
    assert data.class_names == ("one", "two", "zero") and data.is_image
    assert data.input_shape == (1, 16, 16) and len(data.train) + len(data.val) + len(data.test) == 30
    assert data.image is not None and data.image.image_column == "image"
    assert data.image.to_dict()["label_column"] == "label"
    # the same images as the folder, so the same training statistics and pixels per class
    one, zero = data.class_names.index("one"), data.class_names.index("zero")
    x, y = data.train.x, data.train.y
    assert x[y == zero][:, 0, 6:10, 2:5].mean() > x[y == one][:, 0, 6:10, 2:5].mean()
    assert abs(float(data.train.x.mean())) < 1e-4
    # Hugging Face's {bytes, path} structs read the same
    hf = load_dataset(digit_parquet(folder, tmp_path / "hf.parquet", struct=True),
                      image_column="image", val_fraction=0.2, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(hf.train.x, data.train.x)


def test_images_are_decoded_once_each_one_at_a_time(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = digit_folder(tmp_path / "digits", per_class=12)
    path = digit_parquet(folder, tmp_path / "digits.parquet")
    seen = count_open_images(monkeypatch)
    load_dataset(folder, val_fraction=0.2, test_fraction=0.2)
    assert seen == {"opened": 36, "open": 0, "most": 1}  # no header pass, none held
    seen.update(opened=0, most=0)
    from raykd.data import image_parquet

    batches: list[int] = []
    rows = image_parquet.image_rows

    def recorded(*args: Any, **kwargs: Any) -> Any:
        for chunk in rows(*args, **kwargs):
            batches.append(len(chunk))
            yield chunk

    monkeypatch.setattr(image_parquet, "image_rows", recorded)
    monkeypatch.setattr(image_parquet, "CHUNK", 8)  # row batches of the file, read one at a time
    load_dataset(path, image_column="image", val_fraction=0.2, test_fraction=0.2)
    assert seen == {"opened": 36, "open": 0, "most": 1}
    assert sum(batches) == 36 and max(batches) <= 8 and len(batches) >= 5


def test_a_parquet_row_without_a_label_is_dropped_and_counted(tmp_path: Path) -> None:

    path = digit_parquet(digit_folder(tmp_path / "digits", per_class=10), tmp_path / "d.parquet")
    frame = pd.read_parquet(path)
    frame.loc[[3, 8], "label"] = None
    frame.to_parquet(path)
    data = load_dataset(path, image_column="image", val_fraction=0.2, test_fraction=0.2)
    assert len(data.train) + len(data.val) + len(data.test) == 28
    assert data.image is not None and "2 of 30 rows without a label dropped" in data.image.fitted_on


@pytest.mark.parametrize(("row", "payload", "message"), [
    (5, b"not a png at all", r"could not read image '.*d\.parquet' row 5 \(column 'image'\)"),
    (7, None, r"'.*d\.parquet' row 7 \(column 'image'\) holds no image \(null\)"),
    (9, b"\x89PNG\r\n\x1a\n truncated", r"row 9 \(column 'image'\)"),
])
def test_an_undecodable_parquet_image_names_the_row(tmp_path: Path, row: int, payload: bytes | None,
                                                    message: str) -> None:

    path = digit_parquet(digit_folder(tmp_path / "digits", per_class=6), tmp_path / "d.parquet")
    frame = pd.read_parquet(path)
    frame.loc[row, "image"] = payload
    frame.to_parquet(path)
    with pytest.raises(DataError, match=message):
        load_dataset(path, image_column="image")


def test_parquet_image_column_errors_name_the_column(tmp_path: Path) -> None:
    path = digit_parquet(digit_folder(tmp_path / "digits", per_class=6), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"column 'picture' not found .*'image', 'label', 'note'"):
        load_dataset(path, image_column="picture")
    with pytest.raises(DataError, match=r"column 'note' .* has type string; data.image_column must"):
        load_dataset(path, image_column="note")
    csv = tmp_path / "d.csv"
    csv.write_text("a,label\n1,x\n")
    with pytest.raises(DataError, match="data.image_column applies to .parquet files only"):
        load_dataset(csv, image_column="a")
    spec = parse_spec({"data": {"dataset": str(path), "image_column": "image"},
                       "teachers": [{"model": {"name": "cnn"}}], "student": {"model": {"name": "mlp"}},
                       "methods": [{"method": "kd"}]})
    assert spec.data.image_column == "image"


# --- end to end on a real local Ray ------------------------------------------------------









