"""A CSV file read line by line with Python's csv module: its header row for pyarrow (csv_arrow), and, once pyarrow
has refused the file, the whole file, to name its first problem with the line it is on: only the first problem of
each kind is kept, so that a large file costs this error path time, not memory. A file with none (pyarrow refuses a
line of spaces amid the rows, or a number written as 1_000, which Python's float() reads) is then read here, in a
second pass, as float64 numbers made float32."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import math
import zlib
from array import array
from contextlib import contextmanager
from typing import BinaryIO, Iterator, Optional

import numpy as np

from trainer.config import ConfigError
from trainer.data.columns import FLOAT32_MAX, Choice, Columns, Wanted, check_named_once, parses


def is_gzip(path: str) -> bool:
    """A `.gz` file is read decompressed, as a `.csv.gz` written by pandas or `gzip FILE` is."""
    return path.lower().endswith(".gz")


@contextmanager
def opened(path: str, key: str) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed if it is a `.gz`; a file that cannot be read is a ConfigError for `key`."""
    try:
        with (gzip.open(path) if is_gzip(path) else open(path, "rb")) as file:
            yield file
    except (OSError, EOFError, zlib.error) as error:  # unreadable; not gzip data; a truncated or damaged .gz
        raise ConfigError(key, path, f"a CSV file that can be read ({error})") from None


def header_row(path: str, key: str) -> Optional[list[str]]:
    """The names of the first row that holds a value, as the file writes them; None for a file without one."""
    with opened(path, key) as file:
        return next((row for _, row in _rows(path, key, file)), None)


def read_lines(path: str, key: str, choose: Choice) -> Columns:
    """The columns `choose` takes; or the file's first problem as a ConfigError for `key`, in the order users are
    told them: text that is not UTF-8, then a row csv cannot read, no row of data, a column named twice, a ragged
    row, the columns `choose` refuses, the first feature with a value that is not a finite number or is beyond
    float32's range, a target with such a number or an empty value."""
    with opened(path, key) as file:
        _check_utf8(path, key, file)
    _read(path, key, _Lines(path, key, choose, collect=False)).raise_the_first_problem()
    return _read(path, key, _Lines(path, key, choose, collect=True)).columns()  # rare: the rules allow the file


def _read(path: str, key: str, lines: _Lines) -> _Lines:
    with opened(path, key) as file:
        for line, row in _rows(path, key, file):
            lines.add(line, row)
    return lines


NOT_TEXT = {b"\x1f\x8b": "gzip-compressed: a name ending in .gz has it decompressed",
            b"PAR1": "a Parquet file, not CSV text", b"PK\x03\x04": "a zip archive (an Excel workbook?), not CSV text"}
"""What a file whose name says CSV may be instead, by its first bytes: said rather than its first byte."""


def _check_utf8(path: str, key: str, file: BinaryIO) -> None:
    """Text in another encoding is named by the line of the first byte UTF-8 cannot read (latin-1's accented
    letters, UTF-16's byte order mark), or else of the first NUL character (UTF-16 without a byte order mark reads
    as UTF-8 with a NUL beside each ASCII letter). Excel's byte order mark is UTF-8. A file that is not text at all
    (NOT_TEXT) is named for what it is."""
    nul_line = None
    for number, line in enumerate(file, start=1):
        if number == 1 and line.startswith(tuple(NOT_TEXT)):
            kind = next(kind for start, kind in NOT_TEXT.items() if line.startswith(start))
            raise ConfigError(key, path, f"a CSV file of UTF-8 text (it is {kind})")
        try:
            text = (line.removeprefix(codecs.BOM_UTF8) if number == 1 else line).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(key, path, f"a CSV file of UTF-8 text (line {number} has the byte "
                                         f"{line[error.start]:#04x}, which is not UTF-8 there: save the file as "
                                         f"UTF-8)") from None
        if nul_line is None and "\0" in text:
            nul_line = number
    if nul_line is not None:
        raise ConfigError(key, path, f"a CSV file of UTF-8 text (line {nul_line} has a NUL character, as UTF-16 text "
                                     f"does: save the file as UTF-8)")


def _rows(path: str, key: str, file: BinaryIO) -> Iterator[tuple[int, list[str]]]:
    """Each row that holds a value (blank lines, and lines of nothing but commas, are not rows), with the line it
    starts on."""
    reader = csv.reader(io.TextIOWrapper(file, encoding="utf-8-sig", newline=""))
    start = 1
    try:
        for row in reader:
            if any(value.strip() for value in row):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as error:  # a field over csv's size limit
        raise ConfigError(key, path, f"a CSV file (line {reader.line_num}: {error})") from None


class _Lines:
    """The rows of one file, in one pass: the first problem of each kind, and with `collect` the values of the
    columns taken."""

    def __init__(self, path: str, key: str, choose: Choice, collect: bool):
        self.path, self.key, self.choose, self.collect = path, key, choose, collect
        self.header: list[str] = []
        self.rows = 0
        self.ragged: Optional[tuple[int, int]] = None  # (line, values)
        self.wanted: Optional[Wanted] = None
        self.refused: Optional[ConfigError] = None  # choose's
        self.features: list[tuple[str, int, array]] = []  # name, index in a row, float64 numbers
        self.target = -1  # its index in a row
        self.labels: list[str] = []  # the target's values, stripped
        self.not_finite: dict[str, tuple[int, str]] = {}  # column -> (line, value)
        self.beyond: dict[str, tuple[int, str]] = {}
        self.target_is_text = False
        self.empty_target: Optional[int] = None  # line

    def add(self, line: int, row: list[str]) -> None:
        if not self.header:
            self._take_header([name.strip() for name in row])
            return
        self.rows += 1
        if len(row) != len(self.header):
            self.ragged = self.ragged or (line, len(row))
            return
        if self.ragged is not None or self.wanted is None:
            return
        for name, index, values in self.features:
            try:
                number = float(row[index])
            except ValueError:
                number = math.nan
            if -FLOAT32_MAX <= number <= FLOAT32_MAX:  # not nan, not inf, within float32's range
                if self.collect:
                    values.append(number)
            else:
                self._note(name, line, row[index], number)
        if self.wanted.target is not None:
            self._check_target(line, row[self.target].strip())

    def _take_header(self, header: list[str]) -> None:
        self.header = header
        try:
            self.wanted = self.choose(header)
        except ConfigError as error:
            self.refused = error
            return
        self.features = [(name, header.index(name), array("d")) for name in self.wanted.features]
        if self.wanted.target is not None:
            self.target = header.index(self.wanted.target)

    def _note(self, name: str, line: int, value: str, number: float) -> None:
        """A number that is not finite, or beyond float32's range: the first of each in the column."""
        if name not in self.not_finite:
            if math.isfinite(number):
                self.beyond.setdefault(name, (line, value))
            else:
                self.not_finite[name] = (line, value)

    def _check_target(self, line: int, value: str) -> None:
        """A problem only if every value is a number (known at the end); an empty label, if any is not."""
        if self.collect:
            self.labels.append(value)
        if parses(value):
            if not -FLOAT32_MAX <= float(value) <= FLOAT32_MAX:
                self._note(self.wanted.target, line, value, float(value))
        else:
            self.target_is_text = True
            if not value and self.empty_target is None:
                self.empty_target = line

    def columns(self) -> Columns:
        """What the rows hold, once they hold no problem."""
        x = np.stack([np.frombuffer(values) for _, _, values in self.features], axis=1).astype(np.float32)
        if self.wanted.target is None:
            return Columns(self.wanted, x)
        y = np.asarray(self.labels) if self.target_is_text else np.asarray([float(v) for v in self.labels])
        return Columns(self.wanted, x, y, self.labels[0])

    def raise_the_first_problem(self) -> None:
        if self.rows == 0:
            raise ConfigError(self.key, self.path, "a CSV file with a header row and at least one row of data")
        check_named_once(self.key, self.path, self.header, "a header row")
        if self.ragged is not None:
            line, values = self.ragged
            raise ConfigError(self.key, self.path, f"{len(self.header)} values per row, as in the header (line "
                                                   f"{line} has {values})")
        if self.refused is not None:
            raise self.refused
        numeric_target = [self.wanted.target] if self.wanted.target is not None and not self.target_is_text else []
        for name in [*self.wanted.features, *numeric_target]:
            if name in self.not_finite:
                line, value = self.not_finite[name]
                raise ConfigError(self.key, self.path, f"a finite number in every row of column {name!r} (line "
                                                       f"{line} has {value!r})")
            if name in self.beyond:
                line, value = self.beyond[name]
                raise ConfigError(self.key, self.path, f"a number within float32's range of ±{FLOAT32_MAX:.3g} in "
                                                       f"every row of column {name!r} (line {line} has {value!r})")
        if self.empty_target is not None:
            raise ConfigError(self.key, self.path, f"a value in every row of column {self.wanted.target!r} (line "
                                                   f"{self.empty_target} is empty)")
