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
from tests.conftest import digits_spec
from tests.test_predict_export import cli, raykd

NAMES = {0: "zero", 1: "one", 2: "two"}


def digit_folder(root: Path, *, per_class: int = 40, start: int = 0, size: int = 16,
                 rgb: bool = False, flat: bool = False) -> Path:
    """scikit-learn's digits 0, 1, 2 as PNGs of ``size`` x ``size``: ``root/<name>/<i>.png``
    (or all directly in ``root`` with ``flat``), ``per_class`` per class from ``start`` on."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for label, name in NAMES.items():
        folder = root if flat else root / name
        folder.mkdir(exist_ok=True)
        images = digits.images[digits.target == label][start:start + per_class]
        for i, pixels in enumerate(images):
            im = Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L")
            im = im.resize((size, size), Image.Resampling.NEAREST)
            (im.convert("RGB") if rgb else im).save(folder / f"{name}-{start + i:03d}.png")
    return root


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

def digit_parquet(folder: Path, path: Path, *, struct: bool = False) -> Path:
    """The PNGs of ``digit_folder`` as a Parquet file, rows shuffled: ``image`` (the encoded
    bytes, or Hugging Face-style structs ``{bytes, path}``), ``label`` (the class name as
    text) and ``note``, a column that is neither."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*/*.png"))
    order = np.random.default_rng(0).permutation(len(files))
    encoded = [files[i].read_bytes() for i in order]
    images = (pa.array([{"bytes": b, "path": files[i].name} for b, i in zip(encoded, order, strict=True)])
              if struct else pa.array(encoded, type=pa.binary()))
    table = pa.table({"image": images, "label": [files[i].parent.name for i in order],
                      "note": [f"scan {i}" for i in order]})
    pq.write_table(table, path, row_group_size=7)
    return path


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
    import pandas as pd

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
    import pandas as pd

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

@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small job on a folder of 3 x 40 digit PNGs: two CNN teachers, an MLP student."""
    from raykd.core.spec import parse_spec
    from raykd.engine import run_job

    root = tmp_path_factory.mktemp("images")
    folder = digit_folder(root / "digits", per_class=40)
    spec = parse_spec(digits_spec(
        str(root / "runs"), name="digit-images", data={"dataset": str(folder), "seed": 0},
        teachers=[{"model": {"name": "cnn", "width": 4}, "seed": s} for s in (1, 2)],
        teacher_train={"epochs": 10, "batch_size": 16, "lr": 0.01},
        student={"model": {"name": "mlp", "hidden": [16]}},
        train={"epochs": 10, "batch_size": 16, "lr": 0.01}))
    result = run_job(spec, job_dir=root / "runs" / "job", log=lambda _: None)
    return {"result": result, "root": root, "dir": root / "runs" / "job"}


@pytest.mark.ray
def test_a_job_on_an_image_folder_learns_the_classes(job: dict[str, Any]) -> None:
    from raykd.models import checkpoint_info

    result = job["result"]
    assert result["dataset"]["class_names"] == ["one", "two", "zero"]
    assert result["dataset"]["train"] + result["dataset"]["val"] + result["dataset"]["test"] == 120
    assert all(t["test_accuracy"] > 0.8 for t in result["teachers"])
    assert result["students"][0]["test_accuracy"] > 0.8
    info = checkpoint_info(result["students"][0]["generations"][0]["checkpoint"])
    assert info["class_names"] == ["one", "two", "zero"] and tuple(info["input_shape"]) == (1, 16, 16)
    assert info["preprocessing"]["format"] == "raykd-image-preprocessing"
    assert info["preprocessing"]["mode"] == "L" and info["preprocessing"]["image_size"] == [16, 16]
    assert (job["dir"] / "preprocessing.json").is_file()


@pytest.mark.ray
def test_predict_on_a_folder_of_new_images_gives_class_names(job: dict[str, Any]) -> None:
    new = digit_folder(job["root"] / "new", per_class=15, start=100)  # not in the training set
    out = job["root"] / "pred.csv"
    done = cli("predict", job["dir"], new, "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "prediction", "prob_one", "prob_two", "prob_zero"]
    assert len(table) == 45 and set(table["prediction"]) <= {"one", "two", "zero"}
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    truth = table["file"].str.split("/").str[0]
    accuracy = float((table["prediction"] == truth).mean())
    assert accuracy > 0.8
    assert f"accuracy {accuracy:.4f} on 45 labelled rows" in done.stdout


@pytest.mark.ray
def test_predict_on_unlabelled_images_and_a_file_that_is_not_an_image(job: dict[str, Any]) -> None:
    flat = digit_folder(job["root"] / "flat", per_class=3, start=150, flat=True)
    out = job["root"] / "flat.csv"
    done = cli("predict", job["dir"], flat, "--out", out)
    assert done.exit_code == 0, done.output
    assert len(pd.read_csv(out)) == 9 and "accuracy" not in done.stdout
    (flat / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    done = raykd("predict", job["dir"], flat, "--out", out, cwd=job["root"])
    assert done.returncode == 2 and "bad.jpg" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.ray
def test_predict_on_a_parquet_of_images_matches_the_folder(job: dict[str, Any]) -> None:
    from raykd.predict import load_student, predict_file

    new = digit_folder(job["root"] / "new-pq", per_class=10, start=120)
    path = digit_parquet(new, job["root"] / "new.parquet")
    out = job["root"] / "pq.csv"
    done = cli("predict", job["dir"], path, "--out", out)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["prediction", "prob_one", "prob_two", "prob_zero"]
    truth = pd.read_parquet(path)["label"]
    accuracy = float((table["prediction"] == truth).mean())
    assert accuracy > 0.8 and f"accuracy {accuracy:.4f} on 30 labelled rows" in done.stdout
    # the same images as a folder: the same probabilities, row for row
    student = load_student(job["dir"])
    order = np.random.default_rng(0).permutation(30)  # digit_parquet's shuffle
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(),
                               predict_file(student, new).probabilities[order], atol=2e-6)
