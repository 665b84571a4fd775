"""Your own CSV table: reading it (pyarrow, and Python's csv module line by line where pyarrow refuses the file),
what its target makes of the task (data.task=auto), and its mistakes. (tests/e2e/test_train_data.py trains on
tables; tests/unit/data/test_parquet.py reads Parquet.)"""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from conftest import compose_config
from helpers.files import table, write
from trainer.config import ConfigError, validate
from trainer.data import build_data, csv_arrow
from trainer.data.build import infer_task
from trainer.data.columns import Wanted
from trainer.data.table import read_csv


def csv_splits(path: str, *overrides: str):
    return build_data(compose_config("data=csv", f"data.path={path}", "data.target=y", *overrides).data)


# --- reading --------------------------------------------------------------------------------------------------------

def test_read_csv_takes_every_other_column_as_float32_features_in_file_order(tmp_path):
    path = write(tmp_path / "t.csv", "b,y,a\n1.5,3,-2\n0.25,4,7\n")
    arrays = read_csv(path, "y")
    assert arrays.x.dtype == np.float32
    np.testing.assert_array_equal(arrays.x, [[1.5, -2], [0.25, 7]])
    np.testing.assert_array_equal(arrays.y, [3, 4])
    assert arrays.test is None


def test_read_csv_takes_the_features_in_the_order_given(tmp_path):
    path = write(tmp_path / "t.csv", "b,y,a,c\n1,3,2,9\n4,5,6,9\n")
    np.testing.assert_array_equal(read_csv(path, "y", features=["a", "b"]).x, [[2, 1], [6, 4]])


def test_read_csv_keeps_text_labels_as_text(tmp_path):
    path = write(tmp_path / "t.csv", "a,y\n1, red\n2,blue\n3,red\n")
    assert read_csv(path, "y").y.tolist() == ["red", "blue", "red"]


def test_a_gzip_compressed_csv_reads_as_the_csv_itself(tmp_path):
    text = "b,y,a\n1.5,red,-2\n0.25,blue,7\n"
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text.encode()))
    plain, compressed = read_csv(write(tmp_path / "t.csv", text), "y"), read_csv(str(tmp_path / "t.csv.gz"), "y")
    np.testing.assert_array_equal(compressed.x, plain.x)
    assert compressed.y.tolist() == plain.y.tolist() == ["red", "blue"]


def test_a_damaged_gzip_file_is_a_data_path_error(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"a,y\n1,2\n3,4\n")[:-12])  # cut short
    with pytest.raises(ConfigError, match=r"^data.path: got .*, expected a CSV file that can be read \("):
        read_csv(str(path), "y")


def test_pyarrow_reads_a_clean_table_with_many_blocks(tmp_path):
    """The fast path: numbers parsed once, as float32, as Python's float() then float32 reads them."""
    rng = np.random.default_rng(0)
    rows = [(f"{a:.7g}", f"{b:.17g}", int(c)) for a, b, c in zip(rng.normal(size=40_000), rng.normal(size=40_000),
                                                                rng.integers(0, 3, 40_000))]
    path = table(tmp_path / "t.csv", "a,b,y", rows)
    columns = csv_arrow.read(path, "data.path", lambda header: Wanted(features=["a", "b"], target="y"))
    expected = np.asarray([[float(a), float(b)] for a, b, _ in rows]).astype(np.float32)
    np.testing.assert_array_equal(columns.x, expected)
    np.testing.assert_array_equal(columns.y, [c for _, _, c in rows])


def test_rows_of_empty_values_are_skipped_as_blank_lines_are(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,red\n,,\n3,4,blue\n"
                                     "\"\",\"\",\"\"\n5,6,red\n")
    arrays = read_csv(path, "y")
    np.testing.assert_array_equal(arrays.x, [[1, 2], [3, 4], [5, 6]])
    assert arrays.y.tolist() == ["red", "blue", "red"]


@pytest.mark.parametrize("text", ["a,b,y\n1,2,red\n   \n3,4,blue\n , ,\n", "a,b,y\n1,2,red\n1_0,4,blue\n"],
                         ids=["lines-of-spaces", "a-number-float-reads"])
def test_a_table_pyarrow_refuses_but_the_rules_allow_is_read_line_by_line(tmp_path, text):
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(csv_arrow.Declined):
        csv_arrow.read(path, "data.path", lambda header: Wanted(features=["a", "b"], target="y"))
    arrays = read_csv(path, "y")
    assert arrays.x.dtype == np.float32
    assert arrays.x[:, 1].tolist() == [2, 4]
    assert arrays.y.tolist() == ["red", "blue"]


def test_reading_a_table_imports_no_pandas():
    """pyarrow's to_numpy, and any Python value handed to pyarrow, import pandas where it is installed: longer than
    the table takes to read."""
    from conftest import STAND_IN_ROOT

    script = ("import sys\nfrom trainer.data.table import read_csv\n"
              f"read_csv({str(STAND_IN_ROOT / 'table.csv')!r}, 'colour')\nprint('pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


# --- data.task=auto -------------------------------------------------------------------------------------------------

TARGETS = [  # (target values, task, num_classes)
    (["yes", "no"] * 15, "binary", 2),
    (["red", "blue", "green"] * 10, "multiclass", 3),
    ([0, 1] * 15, "binary", 2),
    (list(range(5)) * 6, "multiclass", 5),
    (list(range(20)) * 2, "multiclass", 20),
    ([0.5, 1.7, 2.25, -3.0, 4.125] * 6, "regression", None),
    (list(range(21)) * 2, "regression", None),
]
TARGET_IDS = ["text-2", "text-3", "int-2", "int-0..4", "int-20-distinct", "floats", "int-21-distinct"]


@pytest.mark.parametrize("values, task, _", TARGETS, ids=TARGET_IDS)
def test_infer_task(values, task, _):
    y = np.asarray(values) if isinstance(values[0], str) else np.asarray(values, dtype=np.float64)
    assert infer_task(y) == task


@pytest.mark.parametrize("values, task, num_classes", TARGETS, ids=TARGET_IDS)
def test_build_data_infers_the_task_from_the_csv_target(tmp_path, values, task, num_classes):
    path = table(tmp_path / "t.csv", "a,y", [(i, value) for i, value in enumerate(values)])
    data = csv_splits(path, "data.standardize=false")
    assert (data.description.task, data.description.num_classes) == (task, num_classes)
    # Feature a is the row number: each sample's target is its row's value, or its class index in sorted order.
    classes = sorted(set(values))
    for x, y in (data.train, data.val, data.test):
        rows = x[:, 0].long().tolist()
        if task == "regression":
            np.testing.assert_array_equal(y[:, 0].numpy(), np.float32([values[row] for row in rows]))
        else:
            assert y.tolist() == [classes.index(values[row]) for row in rows]


# --- mistakes -------------------------------------------------------------------------------------------------------

def error_of(path: str, target: str = "y", **options) -> str:
    with pytest.raises(ConfigError) as error:
        read_csv(path, target, **options)
    return str(error.value)


def test_a_missing_file_is_a_data_path_error(tmp_path):
    path = str(tmp_path / "nope.csv")
    assert error_of(path) == f"data.path: got {path!r}, expected a CSV file that exists"


def test_a_missing_target_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,2,3\n")
    assert error_of(path) == f"data.target: got 'y', expected a column of {path}: a, b, label"


@pytest.mark.parametrize("features", [["a", "q"], ["a", "y"]], ids=["unknown", "the-target"])
def test_a_feature_that_is_not_a_column_other_than_the_target_is_a_data_features_error(tmp_path, features):
    path = write(tmp_path / "t.csv", "a,y,b\n1,2,3\n")
    assert error_of(path, features=features) == (f"data.features: got {features[1]!r}, expected columns of {path} "
                                                 f"other than the target: a, b")


@pytest.mark.parametrize("bad", ["x", "", "nan", "inf", "-inf", "1,5"], ids=repr)
def test_a_feature_value_that_is_not_a_finite_number_names_the_column_and_line(tmp_path, bad):
    cell = f'"{bad}"' if "," in bad else bad
    path = write(tmp_path / "t.csv", f"a,b,y\n1,2,0\n3,4,1\n5,{cell},0\n7,8,1\n")
    assert error_of(path) == (f"data.path: got {path!r}, expected a finite number in every row of column 'b' "
                              f"(line 4 has {bad!r})")


@pytest.mark.parametrize("column, bad", [("b", "1e308"), ("b", "-3.5e38"), ("y", "1e39")],
                         ids=["feature", "negative-feature", "target"])
def test_a_value_beyond_float32_s_range_names_the_column_and_line(tmp_path, column, bad):
    rows = [[1, 2, 0.5], [3, 4, 1.5], [5, 6, 2.5]]
    rows[2][["a", "b", "y"].index(column)] = bad
    path = table(tmp_path / "t.csv", "a,b,y", rows)
    assert error_of(path) == (f"data.path: got {path!r}, expected a number within float32's range of ±3.4e+38 in "
                              f"every row of column {column!r} (line 4 has {bad!r})")


@pytest.mark.parametrize("encoding, line, problem", [
    ("latin-1", 3, "has the byte 0xe9, which is not UTF-8 there"),
    ("utf-16", 1, "has the byte 0xff, which is not UTF-8 there"),  # its byte order mark
    ("utf-16-le", 1, "has a NUL character, as UTF-16 text does"),
], ids=["latin-1", "utf-16", "utf-16-without-a-byte-order-mark"])
def test_a_file_that_is_not_utf8_text_is_a_data_path_error_naming_the_line(tmp_path, encoding, line, problem):
    path = tmp_path / "t.csv"
    path.write_bytes(("a,y\n1,red\n2,rosé\n" if encoding == "latin-1" else "a,y\n1,red\n2,blue\n").encode(encoding))
    assert error_of(str(path)) == (f"data.path: got {str(path)!r}, expected a CSV file of UTF-8 text (line {line} "
                                   f"{problem}: save the file as UTF-8)")


def test_a_header_that_names_a_column_twice_is_a_data_path_error(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y, a\n1,2,0,3\n4,5,1,6\n")
    assert error_of(path) == (f"data.path: got {path!r}, expected a header row that names each column once ('a' is "
                              f"column 1 and column 4)")


def test_a_field_larger_than_csv_reads_is_a_data_path_error(tmp_path):
    path = write(tmp_path / "t.csv", f'a,y\n1,0\n"{"x" * 200_000}",1\n')
    assert error_of(path) == (f"data.path: got {path!r}, expected a CSV file (line 3: field larger than field limit "
                              f"(131072))")


@pytest.mark.parametrize("label", ["red", "1"], ids=["text", "number"])
def test_a_target_of_one_class_is_a_data_target_error(tmp_path, label):
    path = table(tmp_path / "t.csv", "a,y", [(i, label) for i in range(30)])
    assert error_of(path) == (f"data.target: got 'y', expected a column whose values differ (every row of {path} "
                              f"has {label!r})")


def test_a_path_too_long_for_the_os_is_a_data_path_error(tmp_path):
    path = str(tmp_path / ("x" * 300 + ".csv"))
    assert error_of(path) == f"data.path: got {path!r}, expected a CSV file that exists"
    with pytest.raises(ConfigError) as error:
        validate(compose_config("data=csv", f"data.path={path}", "data.target=y"))
    assert str(error.value) == f"data.path: got {path!r}, expected the path of a file that exists"


@pytest.mark.parametrize("text, features, others", [("a,y\n1,2\n3,4\n", [], "a"), ("y\n1\n2\n", None, "it has none")],
                         ids=["none-given", "only-the-target"])
def test_a_table_without_a_feature_is_a_data_features_error(tmp_path, text, features, others):
    path = write(tmp_path / "t.csv", text)
    assert error_of(path, features=features) == (f"data.features: got [], expected at least one column of {path} "
                                                 f"other than the target 'y': {others}")


def test_a_bad_value_deep_in_a_large_file_names_its_line_as_the_file_counts_them(tmp_path):
    """Past pyarrow's first blocks, and after a blank line: the line in the file, counted from the header's."""
    rows = [(i, 2 * i, i % 2) for i in range(60_000)]
    rows[50_000] = (50_000, "oops", 0)
    lines = ["a,b,y", *(",".join(map(str, row)) for row in rows)]
    lines.insert(10, "")
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    assert error_of(path) == (f"data.path: got {path!r}, expected a finite number in every row of column 'b' "
                              f"(line 50003 has 'oops')")


def test_a_ragged_row_names_its_line(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,4\n5,6,1\n")
    assert error_of(path) == f"data.path: got {path!r}, expected 3 values per row, as in the header (line 3 has 2)"


@pytest.mark.parametrize("text", ["a,b,y\n", ""], ids=["header-only", "empty"])
def test_a_file_without_data_rows_is_a_data_path_error(tmp_path, text):
    path = write(tmp_path / "t.csv", text)
    assert error_of(path) == (f"data.path: got {path!r}, expected a CSV file with a header row and at least one row "
                              f"of data")


def test_text_labels_with_task_regression_is_a_data_task_error(tmp_path):
    path = table(tmp_path / "t.csv", "a,y", [(i, "ab"[i % 2]) for i in range(20)])
    with pytest.raises(ConfigError) as error:
        csv_splits(path, "data.task=regression")
    assert str(error.value) == "data.task: got 'regression', expected multiclass or binary: the target has text labels"


@pytest.mark.parametrize("hole", ["", "nan"], ids=["empty", "nan"])
def test_a_numeric_target_with_a_missing_value_names_the_line(tmp_path, hole):
    rows = [(i, 0.5 + 1.25 * i) for i in range(30)]
    rows[4] = (4, hole)
    with pytest.raises(ConfigError, match=r"line 6"):
        read_csv(table(tmp_path / "t.csv", "a,y", rows), "y")


def test_a_blank_line_at_the_end_is_not_a_row(tmp_path):
    assert read_csv(write(tmp_path / "t.csv", "a,y\n1,2\n3,4\n\n"), "y").y.tolist() == [2, 4]


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("y,a\n1,2\n3,4\n".encode("utf-8-sig"))
    assert read_csv(str(path), "y").y.tolist() == [1, 3]


def test_many_rare_classes_leave_no_split_empty(tmp_path):
    rows = [(i, f"class{i % 40}") for i in range(80)]  # 40 classes of 2 samples: 0.1 of each rounds to 0
    data = csv_splits(table(tmp_path / "t.csv", "a,y", rows))
    assert (len(data.train[0]), len(data.val[0]), len(data.test[0])) == (56, 8, 16)


def test_validate_refuses_a_missing_csv_before_anything_is_read():
    with pytest.raises(ConfigError) as error:
        validate(compose_config("data=csv", "data.path=/no/such.csv", "data.target=y"))
    assert str(error.value) == "data.path: got '/no/such.csv', expected the path of a file that exists"

