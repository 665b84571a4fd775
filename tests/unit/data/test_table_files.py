"""A table file as a hostile user hands it over: not what its name says, cut short, damaged, or of column types a
table of numbers cannot hold. Each ends in one line that says what the file is, or names the column; never a
traceback. (test_table.py and test_parquet.py read the files that are what they say.)"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.files import parquet_bytes
from trainer.config import ConfigError
from trainer.data.parquet import read_parquet
from trainer.data.table import read_csv

TEXT = "a,b,y\n" + "".join(f"{i},{i % 7},{'red' if i % 3 else 'blue'}\n" for i in range(100_000))
"""A table of several of pyarrow's blocks, compressed to some hundred kilobytes."""


def error_of(read, path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        read(str(path), "y")
    return str(error.value)


def xlsx_bytes(path: Path) -> bytes:
    """A zip archive, as an Excel workbook is."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return path.read_bytes()


# --- CSV ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, kind", [
    (lambda tmp: gzip.compress(TEXT.encode()), "gzip-compressed: a name ending in .gz has it decompressed"),
    (lambda tmp: parquet_bytes(a=[1.0, 2.0], y=[0, 1]), "a Parquet file, not CSV text"),
    (lambda tmp: xlsx_bytes(tmp / "book.xlsx"), "a zip archive (an Excel workbook?), not CSV text"),
], ids=["gzip", "parquet", "excel"])
def test_a_csv_name_on_a_file_of_another_kind_says_what_it_is(tmp_path, content, kind):
    path = tmp_path / "t.csv"
    path.write_bytes(content(tmp_path))
    assert error_of(read_csv, path) == f"data.path: got {str(path)!r}, expected a CSV file of UTF-8 text (it is {kind})"


@pytest.mark.parametrize("cut", [lambda data: data[:len(data) // 2], lambda data: data[:-4]],
                         ids=["half", "without-its-length"])
def test_a_csv_gz_cut_short_is_one_line(tmp_path, cut):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(cut(gzip.compress(TEXT.encode())))
    assert error_of(read_csv, path).startswith(f"data.path: got {str(path)!r}, expected a CSV file that can be read (")


def test_a_csv_gz_name_on_plain_text_is_one_line(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_text(TEXT)
    assert error_of(read_csv, path) == (f"data.path: got {str(path)!r}, expected a CSV file that can be read (Not a "
                                        f"gzipped file (b'a,'))")


# --- Parquet --------------------------------------------------------------------------------------------------------

def test_a_parquet_name_on_csv_text_is_one_line(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text(TEXT)
    assert error_of(read_parquet, path).startswith(f"data.path: got {str(path)!r}, expected a Parquet file (Parquet "
                                                   f"magic bytes not found")


def test_a_parquet_file_cut_short_is_one_line(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(parquet_bytes(a=np.arange(1000.0), y=np.arange(1000) % 2)[:-100])
    assert error_of(read_parquet, path).startswith(f"data.path: got {str(path)!r}, expected a Parquet file (")


def test_a_parquet_column_whose_page_fails_its_checksum_is_named(tmp_path):
    data = bytearray(parquet_bytes(a=np.random.default_rng(0).normal(size=10_000), y=np.arange(10_000) % 2))
    data[200:264] = b"\xff" * 64  # in column a's first page, after its header
    path = tmp_path / "t.parquet"
    path.write_bytes(bytes(data))
    assert error_of(read_parquet, path).startswith(f"data.path: got {str(path)!r}, expected a Parquet file whose "
                                                   f"column 'a' can be read (")


@pytest.mark.parametrize("column, kind", [
    (pa.array([[1], [2]]), "list<"), (pa.array([{"u": 1}, {"u": 2}]), "struct<u: int64>"),
    (pa.array([[("k", 1)], [("k", 2)]], pa.map_(pa.string(), pa.int8())), "map<string, int8"),
    (pa.array([b"1", b"2"]), "binary"), (pa.nulls(2), "null"),
], ids=["list", "struct", "map", "binary", "null"])
@pytest.mark.parametrize("name", ["a", "y"], ids=["feature", "target"])
def test_a_parquet_column_of_a_nested_or_unsupported_type_is_named(tmp_path, column, kind, name):
    path = tmp_path / "t.parquet"
    path.write_bytes(parquet_bytes(**{"a": [1.0, 2.0], "y": [0, 1]} | {name: column}))
    assert error_of(read_parquet, path).startswith(f"data.path: got {str(path)!r}, expected a finite number in every "
                                                   f"row of column {name!r} (it holds {kind}")


def test_parquet_integers_beyond_float64_s_exact_range_are_read_as_the_nearest_float(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(parquet_bytes(a=pa.array([2**63 - 1, 3], pa.int64()), b=pa.array([2**64 - 1, 0], pa.uint64()),
                                   y=[0, 1]))
    np.testing.assert_array_equal(read_parquet(str(path), "y").x, np.float32([[2.0**63, 2.0**64], [3, 0]]))


def test_parquet_text_as_string_views_is_text(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(parquet_bytes(a=pa.array(["1.5", " 2"], pa.string_view()),
                                   y=pa.array(["red", "blue"], pa.string_view())))
    arrays = read_parquet(str(path), "y")
    np.testing.assert_array_equal(arrays.x, [[1.5], [2]])
    assert arrays.y.tolist() == ["red", "blue"]
