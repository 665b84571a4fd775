"""Your own data as a CSV table: a header row, then one row per sample; numeric features and a target column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from trainer.config import ConfigError
from trainer.data.splits import Arrays

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
    return Arrays(x=x, y=y, feature_names=list(features))


def read_columns(path: str, key: str = "data.path") -> dict[str, tuple[str, ...]]:
    """A CSV file's columns by their header names, each the text of every row of data. A missing file, one
    without a row of data, or a row whose length is not the header's is a ConfigError for `key`."""
    if not Path(path).is_file():
        raise ConfigError(key, path, "a CSV file that exists")
    with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: drops the BOM that Excel writes
        rows = [row for row in csv.reader(file) if any(value.strip() for value in row)]  # blank lines skipped
    if len(rows) < 2:
        raise ConfigError(key, path, "a CSV file with a header row and at least one row of data")
    header, rows = [name.strip() for name in rows[0]], rows[1:]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError(key, path, f"{len(header)} values per row, as in the header (line {line} has {len(row)})")
    return dict(zip(header, zip(*rows)))


def feature_matrix(path: str, columns: dict[str, tuple[str, ...]], features: Sequence[str],
                   key: str = "data.path") -> np.ndarray:
    """The `features` columns as float32 (N, F); the first value that is not a finite number is named, with its
    line, in a ConfigError for `key`."""
    return np.stack([_numbers(path, name, columns[name], key) for name in features], axis=1).astype(np.float32)


def _numbers(path: str, name: str, values: Sequence[str], key: str = "data.path") -> np.ndarray:
    """A column as float64; the first value that is not a finite number is named, with its line."""
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except ValueError:
        numbers = None
    if numbers is None or not np.isfinite(numbers).all():
        line, bad = next((i, v) for i, v in enumerate(values, start=2) if not _is_finite_number(v))
        raise ConfigError(key, path, f"a finite number in every row of column {name!r} (line {line} has {bad!r})")
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
