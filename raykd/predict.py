"""A trained model on new rows: ``raykd predict`` (and the shared part of ``raykd export``).

The student comes from :mod:`raykd.artifact` (:func:`find_student`, :func:`load_student`:
a checkpoint or a job directory, with its class names and preprocessing; named here too);
a job's teachers and their ensemble load by :mod:`raykd.predict_models`.
:func:`predict_file` applies the model to a ``.csv``/``.parquet`` table, an ``.npz`` of raw
rows (array ``x``, for a model trained on arrays), a ``.parquet`` file of encoded images
(for a model trained on images), or a folder of images (directly in it, or in sub-folders
named by class, which then count as labels), and returns the predicted class names and
per-class probabilities. Every bad input is a :class:`~raykd.core.errors.UserError` naming
what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raykd.artifact import (
    ArtifactError,
    Prediction,
    Student,
    find_student,
    job_record,
    load_student,
    probabilities,
    with_accuracy,
)
from raykd.data import DataError, ImagePrep
from raykd.data.files import read_npz_rows
from raykd.data.image_parquet import parquet_inputs
from raykd.data.images import folder_files
from raykd.data.table_prep import Fallbacks
from raykd.data.tables import read_table
from raykd.predict_text import predict_text

__all__ = [  # the student's names stay importable from here
    "ArtifactError", "Prediction", "Student", "array_inputs", "find_student", "image_inputs",
    "job_record", "load_student", "parquet_image_inputs", "predict_arrays", "predict_file",
    "predict_images", "predict_parquet_images", "predict_table", "probabilities", "table_inputs",
    "write_predictions",
]


def _need_images(student: Student) -> ImagePrep:
    if student.image is None:
        raise ArtifactError(f"{student.title} records no image preprocessing: predict on images "
                            "works for models trained on an image folder or a Parquet image column")
    return student.image


def _check_shape(student: Student, x: np.ndarray) -> np.ndarray:
    if x.shape[1:] != student.input_shape:
        raise ArtifactError(f"the images become inputs {x.shape[1:]} but the model expects "
                            f"{student.input_shape}")
    return x


def image_inputs(student: Student, folder: Path) -> tuple[np.ndarray, list[Path], list[str | None]]:
    """The model inputs of a folder of images, the files, and their labels (sub-folder names)."""
    prep = _need_images(student)
    files, labels = folder_files(folder)
    return _check_shape(student, prep.transform(files)), files, labels


def parquet_image_inputs(student: Student, data: Path, rows: np.ndarray | None = None
                         ) -> tuple[np.ndarray, Any]:
    """The model inputs of a Parquet file's image column, and its labels (a Series) or None."""
    x, labels = parquet_inputs(_need_images(student), data, rows)
    return _check_shape(student, x), labels


def predict_images(student: Student, folder: Path) -> Prediction:
    """Predicted class names and probabilities for every image of ``folder``.

    Images in a sub-folder named like a class are labelled by it: the accuracy over them
    is computed too (a sub-folder that is not a class counts as wrong).
    """
    x, files, labels = image_inputs(student, folder)
    probs = probabilities(student.model, x)
    names = [student.class_names[i] for i in probs.argmax(axis=1)]
    out = Prediction(names=names, probabilities=probs,
                     files=[str(f.relative_to(folder)) for f in files])
    known = [(n, t) for n, t in zip(names, labels, strict=True) if t is not None]
    if known:
        out.accuracy = float(np.mean([n == t for n, t in known]))
        out.labelled = len(known)
    return out


def predict_parquet_images(student: Student, data: Path) -> Prediction:
    """Predicted class names and probabilities for every row of a Parquet image column
    (and the accuracy when the file has the label column)."""
    x, labels = parquet_image_inputs(student, data)
    probs = probabilities(student.model, x)
    names = [student.class_names[i] for i in probs.argmax(axis=1)]
    return with_accuracy(Prediction(names=names, probabilities=probs), labels)


def array_inputs(student: Student, data: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The model inputs of an ``.npz`` of raw rows (array ``x``) through the student's stored
    scaling, and its array ``y`` (class numbers) when it has one."""
    if student.arrays is None:
        raise ArtifactError(f"{student.title} records no array preprocessing: predict on an .npz "
                            "works for models trained on an .npz or a built-in dataset")
    x, y = read_npz_rows(data)
    return student.arrays.transform(x, f"array 'x' of {str(data)!r}"), y


def predict_arrays(student: Student, data: Path) -> Prediction:
    """Predicted class names and probabilities for every raw row of an ``.npz`` (array ``x``),
    and the accuracy when it has array ``y``, the class numbers."""
    x, y = array_inputs(student, data)
    probs = probabilities(student.model, x)
    out = Prediction(names=[student.class_names[i] for i in probs.argmax(axis=1)],
                     probabilities=probs)
    if y is not None:
        if y.shape != (len(x),):
            raise DataError(f"array 'y' of {str(data)!r} has shape {y.shape}; expected "
                            f"({len(x)},), one class number per row of 'x'")
        out.accuracy, out.labelled = float(np.mean(probs.argmax(axis=1) == y)), len(y)
    return out


def predict_file(student: Student, data: Path) -> Prediction:
    """:func:`predict_images` for a folder, :func:`predict_arrays` for an ``.npz``,
    :func:`predict_parquet_images` for a ``.parquet`` file when the model was trained on
    images, else :func:`predict_table`."""
    if student.text is not None:
        return predict_text(student, data)
    if data.is_dir():
        return predict_images(student, data)
    if data.suffix.lower() == ".npz":
        return predict_arrays(student, data)
    if student.image is not None and data.suffix.lower() == ".parquet":
        return predict_parquet_images(student, data)
    return predict_table(student, data)


def table_inputs(student: Student, data: Path) -> tuple[np.ndarray, Fallbacks, Any]:
    """The model inputs of a table file, the fallbacks they used, and the frame itself."""
    if student.prep is None:
        raise ArtifactError(f"{student.title} records no table preprocessing: predict on a table "
                            "works for models trained on a .csv/.parquet table")
    frame = read_table(data, text_columns=student.prep.categorical_columns)
    frame.columns = [str(c) for c in frame.columns]
    x, fallbacks = student.prep.transform(frame, repr(str(data)))
    return x, fallbacks, frame


def predict_table(student: Student, data: Path) -> Prediction:
    """Predicted class names and probabilities for every row of ``data``.

    When ``data`` has the label column, the accuracy over its labelled rows is computed
    too (a label that is not one of the model's classes counts as wrong).
    """
    x, fallbacks, frame = table_inputs(student, data)
    probs = probabilities(student.model, x)
    names = [student.class_names[i] for i in probs.argmax(axis=1)]
    out = Prediction(names=names, probabilities=probs, warnings=fallbacks.lines(),
                     notes=fallbacks.notes())
    assert student.prep is not None
    label = student.prep.label_column
    return with_accuracy(out, frame[label] if label in frame.columns else None)


def write_predictions(prediction: Prediction, class_names: tuple[str, ...], out: Path) -> Path:
    """A CSV with ``prediction`` and one ``prob_<name>`` column per class, one row per input row
    (for images, first a ``file`` column: the path inside the folder)."""
    import pandas as pd

    columns: dict[str, Any] = {} if prediction.files is None else {"file": prediction.files}
    columns["prediction"] = prediction.names
    for i, name in enumerate(class_names):
        columns[f"prob_{name}"] = prediction.probabilities[:, i]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(columns).to_csv(out, index=False, float_format="%.6f")
    except OSError as err:
        raise DataError(f"could not write predictions to {str(out)!r}: {err}") from None
    return out
