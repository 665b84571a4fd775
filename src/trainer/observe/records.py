"""Writing a run's records (metrics.csv, health.csv, summary.json, inspect.json) on a disk that may refuse.

The OS error of a write, or of the close that flushes it, names no file; the one line `train` ends with on a
full or read-only disk must say which file it could not write.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Re-raise an OSError raised inside with `path` as its file name, where it named none."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None
