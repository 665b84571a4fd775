"""Your own data as a CSV table: a header row, then one row per sample; numeric features and a target column."""

from __future__ import annotations

import codecs
import csv
import io
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from trainer.config import ConfigError
from trainer.data.build import Arrays

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest number a table's value may be: features and targets become float32 tensors, where a larger one would
be inf."""


def read_csv(path: str, target: str, features: Optional[Sequence[str]] = None) -> Arrays:
    """Features from the `features` columns (all but the target when null), as float32; the target column as
    numbers, or as text labels (classes) when any value is not a number."""
    columns = read_columns(path)
    header = list(columns)
    if target not in header:
        raise ConfigError("data.target", target, f"a column of {path}: {', '.join(header)}")
    features = list(features) if features is not None else [name for name in header if name != target]
    for name in features:
        if name not in header or name == target:
            raise ConfigError("data.features", name, f"columns of {path} other than the target: "
                                                     f"{', '.join(n for n in header if n != target)}")
    x = feature_matrix(path, columns, features)
    labels = [value.strip() for value in columns[target]]
    if all(_parses(value) for value in labels):
        y = _numbers(path, target, labels)  # refuses nan and inf
    elif "" in labels:
        raise ConfigError("data.path", path, f"a value in every row of column {target!r} "
                                             f"(line {labels.index('') + 2} is empty)")
    else:
        y = np.asarray(labels)  # text labels: classes
    if len(np.unique(y)) < 2:  # one class, or a constant to regress on: the run would learn nothing and say so nowhere
        raise ConfigError("data.target", target, f"a column whose values differ (every row of {path} has "
                                                 f"{labels[0]!r})")
    return Arrays(x=x, y=y, feature_names=list(features))


def read_columns(path: str, key: str = "data.path") -> dict[str, tuple[str, ...]]:
    """A CSV file's columns by their header names, each the text of every row of data. A missing file, one that
    is not UTF-8 text, one without a row of data, a header that names a column twice (the last of them would stand
    for both), or a row whose length is not the header's is a ConfigError for `key`."""
    if not os.path.isfile(path):  # False for a name too long for the OS, where Path.is_file raises
        raise ConfigError(key, path, "a CSV file that exists")
    reader = csv.reader(io.StringIO(_utf8_text(path, key), newline=""))
    try:
        rows = [row for row in reader if any(value.strip() for value in row)]  # blank lines skipped
    except csv.Error as error:  # a field over csv's size limit
        raise ConfigError(key, path, f"a CSV file (line {reader.line_num}: {error})") from None
    if len(rows) < 2:
        raise ConfigError(key, path, "a CSV file with a header row and at least one row of data")
    header, rows = [name.strip() for name in rows[0]], rows[1:]
    named = set()
    for number, name in enumerate(header, start=1):
        if name in named:
            raise ConfigError(key, path, f"a header row that names each column once ({name!r} is column "
                                         f"{header.index(name) + 1} and column {number})")
        named.add(name)
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError(key, path, f"{len(header)} values per row, as in the header (line {line} has {len(row)})")
    return dict(zip(header, zip(*rows)))


def _utf8_text(path: str, key: str) -> str:
    """The file's text, read as UTF-8 (without the byte order mark that Excel writes). Text in another encoding
    is a ConfigError naming the line of the first byte UTF-8 cannot read (latin-1's accented letters, UTF-16's
    byte order mark), or of the first NUL character (UTF-16 without a byte order mark reads as UTF-8 with a NUL
    beside each ASCII letter)."""
    raw = Path(path).read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(key, path, f"a CSV file of UTF-8 text (line {line} has the byte {raw[error.start]:#04x}, "
                                     f"which is not UTF-8 there: save the file as UTF-8)") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(key, path, f"a CSV file of UTF-8 text (line {line} has a NUL character, as UTF-16 text "
                                     f"does: save the file as UTF-8)")
    return text


def feature_matrix(path: str, columns: dict[str, tuple[str, ...]], features: Sequence[str],
                   key: str = "data.path") -> np.ndarray:
    """The `features` columns as float32 (N, F); the first value that is not a finite number, or is beyond float32's
    range, is named, with its line, in a ConfigError for `key`."""
    return np.stack([_numbers(path, name, columns[name], key) for name in features], axis=1).astype(np.float32)


def _numbers(path: str, name: str, values: Sequence[str], key: str = "data.path") -> np.ndarray:
    """A column as float64; the first value that is not a finite number, or is one beyond float32's range (the
    tensors'), is named, with its line."""
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except ValueError:
        numbers = None
    if numbers is None or not np.isfinite(numbers).all():
        line, bad = next((i, v) for i, v in enumerate(values, start=2) if not _is_finite_number(v))
        raise ConfigError(key, path, f"a finite number in every row of column {name!r} (line {line} has {bad!r})")
    beyond = np.flatnonzero(np.abs(numbers) > FLOAT32_MAX)
    if len(beyond):
        raise ConfigError(key, path, f"a number within float32's range of ±{FLOAT32_MAX:.3g} in every row of column "
                                     f"{name!r} (line {beyond[0] + 2} has {values[beyond[0]]!r})")
    return numbers


def _is_finite_number(value: str) -> bool:
    return _parses(value) and bool(np.isfinite(float(value)))


def _parses(value: str) -> bool:
    """Whether float() reads it (nan and inf included)."""
    try:
        float(value)
    except ValueError:
        return False
    return True
