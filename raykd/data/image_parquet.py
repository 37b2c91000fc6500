"""Parquet files of encoded images as datasets: ``data.dataset: x.parquet`` with
``data.image_column``.

- **images**: column ``image_column`` holds one encoded image (PNG, JPEG, any format
  Pillow reads) per row, as binary values, or as structs with a binary ``bytes`` field
  (how Hugging Face ``datasets`` stores an ``Image`` feature). Size, channels and values
  follow the image-folder rules (:mod:`raykd.data.images`).
- **labels**: column ``label_column``: text, integers or booleans, numbered in sorted
  order as a table's labels are (:func:`~raykd.data.table_columns.encode_labels`); the
  class names are the sorted distinct labels. Rows without a label are dropped (counted
  in the preprocessing's ``fitted_on``). Other columns are ignored.
- **lazily**: only the label column is read whole; the image column is read in row
  batches of :data:`~raykd.data.image_decode.CHUNK` and decoded batch by batch into the
  job's array (:func:`~raykd.data.image_decode.decode_images`).
- **errors**: a row whose image is null or cannot be decoded is a DataError naming the
  file, the row (counted from 0, as in pandas and pyarrow) and the column.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from raykd.data.checks import DataError, describe_error, shown_names
from raykd.data.dataset import Dataset
from raykd.data.image_decode import CHUNK, Item, decode_images
from raykd.data.image_prep import ImagePrep
from raykd.data.images import fit_images
from raykd.data.paths import open_data
from raykd.data.table_columns import encode_labels


def open_parquet(path: Path, columns: list[str]) -> Any:
    """``pyarrow.parquet.ParquetFile`` of ``path``, checked to have ``columns``; DataError else."""
    import pyarrow.parquet as pq

    where = repr(str(path))
    if not path.is_file():
        raise DataError(f"data file {where} does not exist")
    handle = open_data(path)
    try:
        parquet = pq.ParquetFile(handle)  # it keeps the handle: the checked file is read
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not Parquet
        handle.close()
        raise DataError(f"could not read {where} as .parquet: {describe_error(exc)}") from None
    names = list(parquet.schema_arrow.names)
    for column in columns:
        if column not in names:
            raise DataError(f"column {column!r} not found in {where}; columns found: "
                            f"{shown_names(names)}")
    return parquet


def _check_type(kind: Any, column: str, where: str) -> None:
    """DataError unless ``kind`` is binary, or a struct with a binary ``bytes`` field."""
    import pyarrow as pa

    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        kind = kind.field("bytes").type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind)):
        raise DataError(f"column {column!r} of {where} has type {kind}; data.image_column must "
                        "hold encoded images (binary PNG/JPEG bytes, or structs with a 'bytes' field)")


def _binary(values: Any) -> Any:
    """A checked column's binary values (a struct column's ``bytes`` field)."""
    import pyarrow as pa

    return values.field("bytes") if pa.types.is_struct(values.type) else values


def image_rows(parquet: Any, column: str, where: str, rows: np.ndarray | None = None
               ) -> Iterator[list[Item]]:
    """``(name, encoded bytes)`` of the rows selected by the bool mask ``rows`` (None: all),
    one row batch of :data:`CHUNK` at a time."""
    _check_type(parquet.schema_arrow.field(column).type, column, where)
    start = 0
    for batch in parquet.iter_batches(batch_size=CHUNK, columns=[column]):
        values = _binary(batch.column(0)).to_pylist()
        chunk: list[Item] = []
        for offset, payload in enumerate(values):
            row = start + offset
            if rows is not None and not rows[row]:
                continue
            name = f"{where} row {row} (column {column!r})"
            if payload is None:
                raise DataError(f"{name} holds no image (null); fill it or drop the row")
            chunk.append((name, bytes(payload)))
        start += len(values)
        yield chunk


def read_labels(parquet: Any, label_column: str) -> Any:
    """The label column as a pandas Series."""
    return parquet.read(columns=[label_column]).column(0).to_pandas()


def load_image_parquet(path: Path, *, image_column: str, label_column: str,
                       image_size: tuple[int, int] | None, val_fraction: float,
                       test_fraction: float, seed: int, train_limit: int | None) -> Dataset:
    """Labels first, then the images decoded batch by batch; split and fit as for a folder."""
    where = repr(str(path))
    parquet = open_parquet(path, [image_column, label_column])
    _check_type(parquet.schema_arrow.field(image_column).type, image_column, where)  # up front
    codes, class_names, keep = encode_labels(read_labels(parquet, label_column), where, label_column)
    decoded = decode_images(image_rows(parquet, image_column, where, keep), len(codes), mode=None,
                            size=image_size, where=where)
    lost = int((~keep).sum())
    dropped = f"; {lost} of {len(keep)} rows without a label dropped" if lost else ""
    return fit_images(decoded, codes, class_names, name=path.stem, where=where,
                      val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                      train_limit=train_limit, dropped=dropped, image_column=image_column,
                      label_column=label_column)


def parquet_inputs(prep: ImagePrep, path: Path, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, Any]:
    """Model inputs of a Parquet file's images by a fitted ``prep`` (its image column, or
    ``image`` for a model trained on a folder), and the rows' labels (a pandas Series) when
    the file has its label column (or ``label``), else None."""
    column, label = prep.image_column or "image", prep.label_column or "label"
    where = repr(str(path))
    parquet = open_parquet(path, [column])
    n = parquet.metadata.num_rows if rows is None else int(rows.sum())
    x = prep.transform_items(image_rows(parquet, column, where, rows), n, where)
    labels = None
    if label in parquet.schema_arrow.names:
        labels = read_labels(parquet, label)
        labels = labels if rows is None else labels[rows].reset_index(drop=True)
    return x, labels
