"""Your own data as a Parquet file (data=parquet), with the keys of data=csv: `target`, `features` (null: every
column but the target, and but the index pandas may have stored), `task`.

pyarrow reads one column at a time, so that a table costs little more memory than its float32 features. Columns of
numbers (integers, floats, decimals, booleans) are read as they are; a column of text is read as a CSV file's is:
numbers when every value is one (a feature must be), else text labels (a target may be). A missing column, a
column of another type, a null, or a value that is not a finite number within float32's range is a ConfigError
naming the column and the row (counted from 1); so is a page whose checksum (where the writer kept one) says it is
damaged."""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.config import ConfigError
from trainer.data.arrow_arrays import as_numpy
from trainer.data.build import Arrays
from trainer.data.columns import (FLOAT32_MAX, Choice, Columns, check_named_once, check_target_varies, parses,
                                  run_columns)


def read_parquet(path: str, target: str, features: Optional[Sequence[str]] = None) -> Arrays:
    """Features from the `features` columns (all but the target when null), as float32; the target column as
    numbers, or as text labels (classes) when it holds text that is not all numbers."""
    columns = parquet_columns(path, "data.path", partial(run_columns, path, target, features), keep=target)
    check_target_varies(path, target, columns.y, columns.first)
    return Arrays(x=columns.x, y=columns.y, feature_names=columns.wanted.features)


def parquet_columns(path: str, key: str, choose: Choice, keep: Optional[str] = None) -> Columns:
    """The columns `choose` takes from the file's column names (less the index pandas stored, but for `keep`): a
    problem with the file or with a value taken is a ConfigError for `key` naming the column and the row."""
    if not os.path.isfile(path):  # False for a name too long for the OS, where Path.is_file raises
        raise ConfigError(key, path, "a Parquet file that exists")
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)  # where the writer kept them
    except (pa.ArrowException, OSError) as error:
        raise ConfigError(key, path, f"a Parquet file ({_first_line(error)})") from None
    header = file.schema_arrow.names
    check_named_once(key, path, header, "a Parquet file")
    index = _pandas_index(file.schema_arrow)
    wanted = choose([name for name in header if name not in index or name == keep])
    if file.metadata.num_rows == 0:
        raise ConfigError(key, path, "a Parquet file with at least one row")
    x = np.empty((file.metadata.num_rows, len(wanted.features)), np.float32)
    for j, name in enumerate(wanted.features):
        x[:, j] = _numbers(path, key, name, _column(path, key, file, name))
    if wanted.target is None:
        return Columns(wanted, x)
    y, first = _target(path, key, wanted.target, _column(path, key, file, wanted.target))
    return Columns(wanted, x, y, first)


def _pandas_index(schema: pa.Schema) -> set[str]:
    """The columns that hold the index of the DataFrame pandas wrote (its row labels, not data)."""
    metadata = (schema.metadata or {}).get(b"pandas")
    if metadata is None:
        return set()
    return {name for name in json.loads(metadata).get("index_columns", []) if isinstance(name, str)}


def _column(path: str, key: str, file: pq.ParquetFile, name: str) -> pa.ChunkedArray:
    """One column, read on its own; text kept in a dictionary (pandas' categories), or as string views (which
    pyarrow's text functions do not take), as plain text."""
    try:
        column = file.read(columns=[name]).column(0)
    except (pa.ArrowException, OSError) as error:  # a damaged file
        raise ConfigError(key, path, f"a Parquet file whose column {name!r} can be read "
                                     f"({_first_line(error)})") from None
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.cast(pa.string()) if pa.types.is_string_view(column.type) else column


def _is_text(column: pa.ChunkedArray) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _numbers(path: str, key: str, name: str, column: pa.ChunkedArray) -> np.ndarray:
    """The column as float64; the first row that is null, not a finite number, or beyond float32's range is
    named."""
    expected = f"a finite number in every row of column {name!r}"
    read = _values(column)
    if read is None:
        raise ConfigError(key, path, f"{expected} (it holds {column.type})")
    values, null = read
    bad = np.flatnonzero(null | ~np.isfinite(values))
    if len(bad):
        raise ConfigError(key, path, f"{expected} ({_row_holding(column, bad[0])})")
    beyond = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(beyond):
        raise ConfigError(key, path, f"a number within float32's range of ±{FLOAT32_MAX:.3g} in every row of column "
                                     f"{name!r} ({_row_holding(column, beyond[0])})")
    return values


def _values(column: pa.ChunkedArray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """float64 values (nan for text that is not a number; any number where null) and where the column is null;
    None for a column of neither numbers nor text."""
    if _is_text(column):
        try:
            column = pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
        except pa.ArrowInvalid:  # text, or numbers only Python reads (1_000): float() decides, as for CSV
            texts = column.to_pylist()
            return (np.array([float(text) if text is not None and parses(text) else np.nan for text in texts]),
                    np.array([text is None for text in texts]))
    elif not any(is_type(column.type) for is_type in (pa.types.is_integer, pa.types.is_floating,
                                                      pa.types.is_decimal, pa.types.is_boolean)):
        return None
    numbers = pc.cast(column, pa.float64(), safe=False)  # an integer beyond 2**53 as the float nearest it
    return as_numpy(numbers, np.float64), as_numpy(pc.cast(pc.is_null(numbers), pa.int8()), np.int8).astype(bool)


def _target(path: str, key: str, name: str, column: pa.ChunkedArray) -> tuple[np.ndarray, str]:
    """Numbers, or text labels when the column holds text that is not all numbers (as for CSV, stripped); and its
    first value, as text."""
    if _is_text(column):
        column = pc.utf8_trim_whitespace(column)
        labels = column.to_pylist()
        if not all(label is not None and parses(label) for label in labels):
            empty = next((row for row, label in enumerate(labels) if not label), None)  # null or ""
            if empty is not None:
                raise ConfigError(key, path, f"a value in every row of column {name!r} ({_row_holding(column, empty)})")
            return np.asarray(labels), labels[0]
    return _numbers(path, key, name, column), str(column[0].as_py())


def _row_holding(column: pa.ChunkedArray, index: int) -> str:
    """`row 3 is null`, `row 3 is empty`, `row 3 has 'red'`: the row counted from 1."""
    value = column[int(index)].as_py()
    if value is None:
        return f"row {index + 1} is null"
    return f"row {index + 1} is empty" if value == "" else f"row {index + 1} has {value!r}"


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
