"""A CSV file read by pyarrow's streaming reader, block by block: the features parsed as float32 straight into one
array, so that a table costs little more memory than that array, and the target as text. Whatever breaks a rule
(a value that is not a finite number, a hole, a ragged row, text that is not UTF-8, ...) is Declined, without a
line number: csv_lines then reads the file line by line to name the problem and its line. (pyarrow calls no Python
code while it reads: a callback of its threads, such as an invalid_row_handler, can abort the interpreter as it
exits after an error.)

Imported only once a table is read: pyarrow is not needed before (`train --help`, the other data sets)."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from trainer.data.arrow_arrays import as_numpy
from trainer.data.columns import FLOAT32_MAX, Choice, Columns, parses
from trainer.data.csv_lines import header_row, is_gzip

BLOCK_BYTES = 512 * 1024
"""pyarrow's block of text: it reads a few dozen blocks ahead of the one being converted. Larger ones read no faster
on 1M x 21 (scripts/bench_tables.py), and cost that readahead in memory."""


class Declined(Exception):
    """pyarrow refused the file, or what it read breaks a rule: why, in words."""


def read(path: str, key: str, choose: Choice) -> Columns:
    """The columns `choose` takes from the header: the features float32 (N, F), the target float64 numbers or text
    labels (as data=csv reads them: text when any value is not a number)."""
    try:
        raw = header_row(path, key)  # the names as the file writes them: pyarrow's keys
        if raw is None:
            raise Declined("no row")
        wanted = choose([name.strip() for name in raw])
    except ValueError as error:  # ConfigError; text that is not UTF-8
        raise Declined(str(error)) from None
    names = [name.strip() for name in raw]
    if len(set(names)) < len(names):
        raise Declined("a column is named twice")
    column_of = dict(zip(names, raw))
    features = [column_of[name] for name in wanted.features]
    types = {name: pa.string() for name in raw} | {name: pa.float32() for name in features}
    x, rows, target = None, 0, []
    try:
        with pv.open_csv(pa.input_stream(path, compression="gzip" if is_gzip(path) else None),
                         read_options=pv.ReadOptions(block_size=BLOCK_BYTES),
                         convert_options=pv.ConvertOptions(column_types=types, null_values=[""])) as reader:
            if reader.schema.names != raw:
                raise Declined(f"pyarrow reads the header as {reader.schema.names}")
            for batch in reader:
                batch = _without_blank_rows(batch, features)
                x = _room_for(x, rows, batch.num_rows, len(features), path)
                for j, name in enumerate(features):
                    column = batch.column(name)
                    if column.null_count:
                        raise Declined(f"column {name!r} has no value in a row")
                    x[rows:rows + batch.num_rows, j] = as_numpy(column, np.float32)
                if not np.isfinite(x[rows:rows + batch.num_rows]).all():  # nan, inf, or beyond float32's range
                    raise Declined("a feature has a value that is not a finite number within float32's range")
                rows += batch.num_rows
                if wanted.target is not None:
                    target.append(batch.column(column_of[wanted.target]))
    except (pa.ArrowException, OSError) as error:  # ragged rows, text in a number column, not UTF-8, bad gzip
        raise Declined(str(error).splitlines()[0]) from None
    if rows == 0:
        raise Declined("no row of data")
    if wanted.target is None:
        return Columns(wanted, x[:rows])
    y, first = _target(pa.chunked_array(target, type=pa.string()))
    return Columns(wanted, x[:rows], y, first)


def _without_blank_rows(batch: pa.RecordBatch, features: list[str]) -> pa.RecordBatch:
    """The batch without rows of the header's length that hold no value (a spreadsheet's `,,,` lines)."""
    if not any(batch.column(name).null_count for name in features):
        return batch
    blank = None
    for name, column in zip(batch.schema.names, batch.columns):
        if name in features:
            empty = pc.is_null(column)
        else:  # text of nothing but spaces (a length cast to bool: whether it is not 0)
            empty = pc.invert(pc.cast(pc.utf8_length(pc.utf8_trim_whitespace(column)), pa.bool_()))
        blank = empty if blank is None else pc.and_(blank, empty)
    return batch.filter(pc.invert(blank))


def _room_for(x: Optional[np.ndarray], rows: int, more: int, features: int, path: str) -> np.ndarray:
    """`x`, or a larger array holding its first `rows`: room for `more`. The first block sizes it for the whole
    file, with a tenth to spare (pages never written cost no memory); a .gz file, whose size is less than its
    text's, grows by doubling."""
    if x is None:
        return np.empty((int(os.path.getsize(path) / BLOCK_BYTES * more * 1.1) + more, features), np.float32)
    if rows + more <= len(x):
        return x
    larger = np.empty((2 * len(x) + more, features), np.float32)
    larger[:rows] = x[:rows]
    return larger


def _target(text: pa.ChunkedArray) -> tuple[np.ndarray, str]:
    """The target column (stripped) as float64 numbers when every value is one, else as text labels; and its
    first value. Declined: a number that is not finite or beyond float32's range, an empty
    label, or numbers that pyarrow and Python's float() read differently."""
    labels = pc.utf8_trim_whitespace(text)
    first = labels[0].as_py()
    try:
        numbers = as_numpy(pc.cast(labels, pa.float64()), np.float64)
    except pa.ArrowInvalid:  # a value that is not a number: text labels
        distinct = pc.unique(labels).to_pylist()
        if "" in distinct or all(parses(value) for value in distinct):
            raise Declined("the target has an empty value, or numbers pyarrow does not read") from None
        return np.asarray(labels.to_pylist()), first
    if not (np.isfinite(numbers).all() and (np.abs(numbers) <= FLOAT32_MAX).all()):
        raise Declined("the target has a value that is not a finite number within float32's range")
    return numbers, first
