"""Your own data as a CSV table (data=csv): a header row, then one row per sample; numeric features and a target
column. A `.csv.gz` file is read as it is, decompressed on the way.

pyarrow reads the table (csv_arrow), the features straight into float32. A file it refuses, or whose values break
a rule, is read again line by line with Python's csv module (csv_lines), only then, to name the first problem with
its column and line (or, for the rare file pyarrow refuses and the rules allow, to read it). (data=parquet:
parquet.py; `predict` reads either kind by its name, table_columns.)"""

from __future__ import annotations

import os
from functools import partial
from typing import Optional, Sequence

from trainer.config import ConfigError
from trainer.data.build import Arrays
from trainer.data.columns import Choice, Columns, check_target_varies, run_columns
from trainer.data.csv_lines import read_lines

TABLE_FILES = (".csv", ".csv.gz", ".parquet")
"""How the names of the table files `predict` reads end (table_columns reads them as training does)."""


def read_csv(path: str, target: str, features: Optional[Sequence[str]] = None) -> Arrays:
    """Features from the `features` columns (all but the target when null), as float32; the target column as
    numbers, or as text labels (classes) when any value is not a number."""
    columns = csv_columns(path, "data.path", partial(run_columns, path, target, features))
    check_target_varies(path, target, columns.y, columns.first)
    return Arrays(x=columns.x, y=columns.y, feature_names=columns.wanted.features)


def csv_columns(path: str, key: str, choose: Choice) -> Columns:
    """The columns `choose` takes from a CSV file's header. A missing file, one that is not UTF-8 text, one without
    a row of data, a header that names a column twice, a row whose length is not the header's, the columns
    `choose` refuses, or a value that is not a finite number within float32's range (a target may be text labels)
    is a ConfigError for `key` naming the column and the line."""
    if not os.path.isfile(path):  # False for a name too long for the OS, where Path.is_file raises
        raise ConfigError(key, path, "a CSV file that exists")
    from trainer.data import csv_arrow  # pyarrow, imported once a table is read

    try:
        return csv_arrow.read(path, key, choose)
    except csv_arrow.Declined:
        return read_lines(path, key, choose)


def table_columns(path: str, key: str, choose: Choice) -> Columns:
    """The columns `choose` takes from a table file, read as its name says: a `.parquet` file as Parquet (parquet.py),
    any other as CSV text, decompressed if its name ends in `.gz`."""
    if path.lower().endswith(".parquet"):
        from trainer.data.parquet import parquet_columns  # pyarrow, imported once a table is read

        return parquet_columns(path, key, choose)
    return csv_columns(path, key, choose)
