"""What a table's columns must be, whatever file holds them (CSV, table.py; Parquet, parquet.py): the columns a
run takes (data.target, data.features), numbers within float32's range, and a target whose values differ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from trainer.config import ConfigError

FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest number a table's value may be: features and targets become float32 tensors, where a larger one would
be inf."""


@dataclass(frozen=True)
class Wanted:
    """The columns a reader takes from a table: the features, as float32, and the target, if any."""

    features: list[str]
    target: Optional[str] = None


@dataclass
class Columns:
    """What a reader took from a table."""

    wanted: Wanted
    x: np.ndarray
    """The features, float32 (N, F)."""
    y: Optional[np.ndarray] = None
    """The target: float64 numbers, or text labels."""
    first: Optional[str] = None
    """The target's first value, as text: what a message about the target shows."""


Choice = Callable[[list[str]], Wanted]
"""The columns to take, given the header's names; a ConfigError when the table lacks them."""


def run_columns(path: str, target: str, features: Optional[Sequence[str]], header: list[str]) -> Wanted:
    """data.target and data.features against the header: `features` null is every column but the target."""
    if target not in header:
        raise ConfigError("data.target", target, f"a column of {path}: {', '.join(header)}")
    others = [name for name in header if name != target]
    chosen = list(features) if features is not None else others
    for name in chosen:
        if name not in others:
            raise ConfigError("data.features", name, f"columns of {path} other than the target: {', '.join(others)}")
    if not chosen:
        raise ConfigError("data.features", chosen, f"at least one column of {path} other than the target {target!r}: "
                                                   f"{', '.join(others) or 'it has none'}")
    return Wanted(features=chosen, target=target)


def check_named_once(key: str, path: str, header: list[str], what: str) -> None:
    """A column named twice would be read as one of them."""
    for number, name in enumerate(header, start=1):
        if header.index(name) + 1 != number:
            raise ConfigError(key, path, f"{what} that names each column once ({name!r} is column "
                                         f"{header.index(name) + 1} and column {number})")


def check_target_varies(path: str, target: str, y: np.ndarray, first: str) -> None:
    """One class, or a constant to regress on: the run would learn nothing and say so nowhere. `first` is the
    first row's value, as text."""
    if len(np.unique(y)) < 2:
        raise ConfigError("data.target", target, f"a column whose values differ (every row of {path} has "
                                                 f"{first!r})")


def parses(value: str) -> bool:
    """Whether float() reads it (nan and inf included)."""
    try:
        float(value)
    except ValueError:
        return False
    return True
