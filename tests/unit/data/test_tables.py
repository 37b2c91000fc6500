"""Real tables: text labels kept by name, categorical columns one-hot encoded, index columns
dropped with a reason, missing values by the documented rule, statistics fitted on the
training split only, and clear errors for bad column choices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raykd.core.spec import SpecError, parse_spec
from raykd.data import ColumnChoice, DataError, load_dataset
from raykd.data.splits import dataset_indices
from raykd.data.table_prep import MISSING, OTHER, TablePrep
from tests.helpers.data import weather_frame


@pytest.fixture
def weather_csv(tmp_path: Path) -> Path:
    path = tmp_path / "weather.csv"
    weather_frame().to_csv(path, index=False)
    return path


def test_text_labels_are_named_in_sorted_order(weather_csv: Path) -> None:
    data = load_dataset(weather_csv, label_column="outlook", seed=0)
    assert data.class_names == ("cold", "hot", "mild")
    frame = weather_frame()
    # the test split's labels, read back through the names, are the file's labels
    _, _, test_idx = dataset_indices(len(frame), carve_test=True, val_fraction=0.1,
                                     test_fraction=0.2, seed=0, train_limit=None, where="")
    names = [data.class_names[i] for i in data.test.y]
    assert names == frame["outlook"].to_numpy()[test_idx].tolist()


def test_columns_used_and_dropped_are_reported(weather_csv: Path) -> None:
    table = load_dataset(weather_csv, label_column="outlook").table
    assert table is not None
    assert [(c.name, c.kind) for c in table.columns] == [
        ("city", "categorical"), ("temp", "numeric"), ("wind", "numeric"), ("sky", "categorical")]
    assert table.dropped == ({"column": "Unnamed: 0", "reason": table.dropped[0]["reason"]},)
    assert "row index" in table.dropped[0]["reason"]
    assert "features.include" in table.dropped[0]["reason"]
    # one-hot levels, the rare/unseen fallback and the missing level; wind's missing flag
    assert table.feature_names == [
        "city=lima", "city=oslo", "city=rome", f"city={OTHER}", "temp", "wind", "wind=missing",
        "sky=fog", "sky=rain", "sky=sun", f"sky={OTHER}", f"sky={MISSING}"]


def test_index_by_values_is_dropped_and_can_be_included(tmp_path: Path) -> None:
    frame = weather_frame().rename(columns={"Unnamed: 0": "row_number"})
    path = tmp_path / "w.parquet"
    frame.to_parquet(path)
    table = load_dataset(path, label_column="outlook").table
    assert table is not None and "values are 1..240" in table.dropped[0]["reason"]
    chosen = load_dataset(path, label_column="outlook",
                          features=ColumnChoice(include=("row_number", "temp"))).table
    assert chosen is not None and [c.name for c in chosen.columns] == ["row_number", "temp"]
    assert {d["column"] for d in chosen.dropped} == {"city", "wind", "sky"}


def test_missing_values_follow_the_rule(weather_csv: Path) -> None:
    data = load_dataset(weather_csv, label_column="outlook")
    assert data.table is not None
    x, _ = data.table.transform(weather_frame(), "w")
    names = data.table.feature_names
    wind, flag = names.index("wind"), names.index("wind=missing")
    gaps = weather_frame()["wind"].isna().to_numpy()
    wind_col = next(c for c in data.table.columns if c.name == "wind")
    filled = (wind_col.median - wind_col.mean) / wind_col.std
    np.testing.assert_allclose(x[gaps, wind], filled, rtol=1e-5)
    np.testing.assert_array_equal(x[:, flag], gaps.astype(np.float32))
    sky_missing = names.index(f"sky={MISSING}")
    np.testing.assert_array_equal(x[:, sky_missing], weather_frame()["sky"].isna().to_numpy())
    assert np.isfinite(x).all()


def test_preprocessing_is_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    # val/test rows carry huge temperatures and a city the training rows never have: a fit on
    # all rows would move the mean and add the level
    frame = weather_frame()
    train_idx, val_idx, test_idx = dataset_indices(len(frame), carve_test=True, val_fraction=0.1,
                                                   test_fraction=0.2, seed=3, train_limit=None,
                                                   where="")
    held = np.concatenate([val_idx, test_idx])
    frame.loc[held, "temp"] = 1000.0
    frame.loc[held, "city"] = "paris"
    path = tmp_path / "leak.csv"
    frame.to_csv(path, index=False)
    data = load_dataset(path, label_column="outlook", seed=3)
    assert data.table is not None
    temp = next(c for c in data.table.columns if c.name == "temp")
    assert temp.mean == pytest.approx(frame.loc[train_idx, "temp"].mean())
    assert temp.std == pytest.approx(frame.loc[train_idx, "temp"].std(ddof=0))
    city = next(c for c in data.table.columns if c.name == "city")
    assert "paris" not in city.levels
    assert data.train.x[:, data.table.feature_names.index("temp")].mean() == pytest.approx(0, abs=1e-5)
    assert "training split" in data.table.fitted_on


def test_integer_labels_keep_or_renumber() -> None:
    from raykd.data.table_columns import encode_labels

    codes, names, _ = encode_labels(pd.Series([2, 0, 1, 1]), "t", "y")
    assert names == ("0", "1", "2") and codes.tolist() == [2, 0, 1, 1]
    codes, names, _ = encode_labels(pd.Series([7, 3, 7, None]), "t", "y")
    assert names == ("3", "7") and codes.tolist() == [1, 0, 1]


def test_rows_without_label_are_dropped_and_counted(tmp_path: Path) -> None:
    frame = weather_frame()
    frame.loc[:9, "outlook"] = None
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    data = load_dataset(path, label_column="outlook")
    assert data.table is not None and data.table.rows["dropped_missing_label"] == 10
    assert len(data.train) + len(data.val) + len(data.test) == 230


def test_record_round_trips(weather_csv: Path) -> None:
    table = load_dataset(weather_csv, label_column="outlook").table
    assert table is not None
    record = json.loads(json.dumps(table.to_dict()))
    again = TablePrep.from_dict(record, "r")
    x1, _ = table.transform(weather_frame(), "w")
    x2, _ = again.transform(weather_frame(), "w")
    np.testing.assert_array_equal(x1, x2)
    assert record["missing_rule"].startswith("numeric: missing -> training median")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"label_column": "nope"}, r"label column 'nope' not found.*'outlook'"),
    ({"features": ColumnChoice(include=("temp", "pressure"))},
     r"names column\(s\) \['pressure'\].*columns are \[.*'temp'"),
    ({"features": ColumnChoice(exclude=("outlook",))}, r"label column 'outlook'.*never a feature"),
    ({"features": ColumnChoice(include=("empty",))}, r"'empty'.*no values in the training split"),
])
def test_bad_choices_are_one_line_data_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    frame = weather_frame().assign(empty=np.nan)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    kwargs = {"label_column": "outlook", **kwargs}
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path, **kwargs)
    assert "\n" not in str(info.value)


def test_empty_column_not_named_is_dropped_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    weather_frame().assign(empty=np.nan, const=4).to_csv(path, index=False)
    table = load_dataset(path, label_column="outlook").table
    assert table is not None
    reasons = {d["column"]: d["reason"] for d in table.dropped}
    assert "no values" in reasons["empty"] and "constant" in reasons["const"]


def test_features_on_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros((20, 2)), y=np.arange(20) % 2)
    with pytest.raises(DataError, match="tables only"):
        load_dataset(path, features=ColumnChoice(include=("a",)))


def test_spec_features_are_strict() -> None:
    base = {"teachers": [{"model": {"name": "mlp"}}], "student": {"model": {"name": "mlp"}},
            "methods": [{"method": "kd"}]}
    spec = parse_spec({**base, "data": {"dataset": "t.csv", "features": {"exclude": ["id"]}}})
    assert spec.data.features.exclude == ("id",)
    with pytest.raises(SpecError, match="include and exclude"):
        parse_spec({**base, "data": {"features": {"include": ["a"], "exclude": ["a"]}}})
    with pytest.raises(SpecError, match="includ"):
        parse_spec({**base, "data": {"features": {"includes": ["a"]}}})


def test_nullable_boolean_labels_are_named_like_plain_booleans() -> None:
    from raykd.data.table_columns import encode_labels

    _, plain, _ = encode_labels(pd.Series([True, False, True]), "t", "y")
    _, nullable, _ = encode_labels(pd.Series([True, False, None], dtype="boolean"), "t", "y")
    assert plain == nullable == ("False", "True")


def test_an_infinite_number_is_refused_at_predict_not_predicted(weather_csv: Path) -> None:
    table = load_dataset(weather_csv, label_column="outlook").table
    assert table is not None
    frame = weather_frame()
    frame["temp"] = frame["temp"].astype(object)
    frame.loc[3, "temp"] = "inf"
    with pytest.raises(DataError, match=r"column 'temp' holds 1 non-numeric or infinite value"):
        table.transform(frame, "new.csv")


def test_categorical_levels_do_not_follow_how_pandas_read_the_predict_file(tmp_path: Path) -> None:
    """Levels '1', '2', '3', 'x' at training; a predict file holding only 1, 2, 3 and a blank
    (read by pandas as floats) still gives each row its level, not '(other)'."""
    from raykd.models import build_model, save_checkpoint
    from raykd.predict import load_student, predict_table, table_inputs

    rng = np.random.default_rng(0)
    codes = np.array(["1", "2", "3", "x"] * 30)
    train = pd.DataFrame({"code": codes, "v": rng.normal(size=120),
                          "label": np.where(np.isin(codes, ["1", "3"]), "odd", "other")})
    train.to_csv(tmp_path / "train.csv", index=False)
    data = load_dataset(tmp_path / "train.csv", seed=0)
    assert data.table is not None
    code = data.table.columns[0]
    assert (code.name, code.levels) == ("code", ("1", "2", "3", "x", OTHER))
    config = {"name": "mlp", "hidden": [8]}
    model = build_model(config, data.input_shape, data.num_classes)
    ckpt = save_checkpoint(model, tmp_path / "s.safetensors", config=config,
                           input_shape=data.input_shape, num_classes=data.num_classes,
                           class_names=data.class_names, preprocessing=data.table.to_dict())
    student = load_student(ckpt)
    (tmp_path / "new.csv").write_text("code,v\n1,0\n2,1\n3,2\n,3\n")
    assert pd.read_csv(tmp_path / "new.csv")["code"].dtype.kind == "f"  # how pandas reads it
    pd.read_csv(tmp_path / "new.csv").to_parquet(tmp_path / "new.parquet")  # stored as floats
    for path in (tmp_path / "new.csv", tmp_path / "new.parquet"):
        x, fallbacks, _ = table_inputs(student, path)
        onehot = x[:, : len(code.levels)]
        assert onehot.argmax(axis=1).tolist() == [0, 1, 2, code.levels.index(OTHER)]
        assert fallbacks.unseen == {} and fallbacks.missing == {"code": 1}
        assert predict_table(student, path).warnings == []


def test_an_object_column_holding_floats_is_fitted_on_the_levels_it_is_encoded_with() -> None:
    """A Parquet object column may hold Python floats beside text: fitting named them '1.0'
    while encoding looked up '1', so every such training row silently became '(other)'."""
    from raykd.data.tables import fit_table

    values = pd.Series([1.0, 2.0, "x", 1.0, 2.0, "x"] * 5, dtype=object)
    train = pd.DataFrame({"c": values, "label": [0, 1] * 15})
    prep = fit_table(train, [("c", "categorical")], choice=ColumnChoice(), dropped=[],
                     label_column="label", class_names=("0", "1"), rows={"train": 30},
                     fitted_on="train", where="test")
    column = prep.columns[0]
    assert {"1", "2", "x"} <= set(column.levels), column.levels
    inputs, fallbacks = prep.transform(train, "test")
    other = column.levels.index(OTHER)
    assert not inputs[:, other].any(), "training rows fell into (other)"
    assert not fallbacks.unseen
