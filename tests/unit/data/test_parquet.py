"""Your own Parquet table (data=parquet): real files written by pyarrow, read with data=csv's keys, what the target
makes of the task, a run trained on one, and the mistakes, each named by column and row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import compose_config
from helpers.commands import assert_succeeded
from trainer.config import ConfigError, validate
from trainer.data import build_data
from trainer.data.parquet import read_parquet


def parquet(path: Path, metadata: dict | None = None, **columns) -> str:
    """A Parquet file of `columns` (name: values or a pyarrow array), in that order."""
    table = pa.table(columns)
    pq.write_table(table.replace_schema_metadata(metadata) if metadata else table, path)
    return str(path)


def error_of(path: str, target: str = "y", **options) -> str:
    with pytest.raises(ConfigError) as error:
        read_parquet(path, target, **options)
    return str(error.value)


# --- reading --------------------------------------------------------------------------------------------------------

def test_read_parquet_takes_every_other_column_as_float32_features_in_file_order(tmp_path):
    path = parquet(tmp_path / "t.parquet", b=[1.5, 0.25], y=[3, 4], a=pa.array([-2, 7], pa.int16()))
    arrays = read_parquet(path, "y")
    assert arrays.x.dtype == np.float32
    np.testing.assert_array_equal(arrays.x, [[1.5, -2], [0.25, 7]])
    np.testing.assert_array_equal(arrays.y, [3, 4])
    assert arrays.feature_names == ["b", "a"]


def test_read_parquet_takes_the_features_in_the_order_given(tmp_path):
    path = parquet(tmp_path / "t.parquet", b=[1, 4], y=[3, 5], a=[2, 6], c=[9, 9])
    np.testing.assert_array_equal(read_parquet(path, "y", features=["a", "b"]).x, [[2, 1], [6, 4]])


@pytest.mark.parametrize("labels", [["red", "blue", "red"], pa.array(["red", "blue", "red"]).dictionary_encode(),
                                    [" red", "blue ", "red"]], ids=["text", "categories", "spaces"])
def test_text_labels_stay_text(tmp_path, labels):
    assert read_parquet(parquet(tmp_path / "t.parquet", a=[1, 2, 3], y=labels), "y").y.tolist() == ["red", "blue",
                                                                                                    "red"]


def test_text_that_is_all_numbers_is_numbers_as_in_a_csv_file(tmp_path):
    arrays = read_parquet(parquet(tmp_path / "t.parquet", a=["1.5", " 2", "1e3"], y=["0.5", "2", "-1"]), "y")
    np.testing.assert_array_equal(arrays.x, [[1.5], [2], [1000]])
    np.testing.assert_array_equal(arrays.y, [0.5, 2, -1])


def test_booleans_and_decimals_are_numbers(tmp_path):
    import decimal

    decimals = pa.array([decimal.Decimal("1.25"), decimal.Decimal("-3")], pa.decimal128(5, 2))
    arrays = read_parquet(parquet(tmp_path / "t.parquet", a=[True, False], b=decimals, y=[0, 1]), "y")
    np.testing.assert_array_equal(arrays.x, [[1, 1.25], [0, -3]])


def test_the_index_pandas_stored_is_not_a_feature(tmp_path):
    """pandas writes a DataFrame's index as a column when it is not 0..N-1 (after a filter, say), and says so."""
    metadata = {b"pandas": json.dumps({"index_columns": ["__index_level_0__"], "columns": []})}
    path = parquet(tmp_path / "t.parquet", metadata, a=[1.0, 2.0], y=["p", "q"], __index_level_0__=[4, 9])
    arrays = read_parquet(path, "y")
    assert arrays.feature_names == ["a"]
    np.testing.assert_array_equal(arrays.x, [[1], [2]])


@pytest.mark.parametrize("values, task, num_classes", [
    (["yes", "no"] * 15, "binary", 2),
    (list(range(5)) * 6, "multiclass", 5),
    ([0.5, 1.7, 2.25, -3.0, 4.125] * 6, "regression", None),
], ids=["text-2", "int-0..4", "floats"])
def test_build_data_infers_the_task_from_the_parquet_target(tmp_path, values, task, num_classes):
    path = parquet(tmp_path / "t.parquet", a=list(range(len(values))), y=values)
    data = build_data(compose_config("data=parquet", f"data.path={path}", "data.target=y").data)
    assert (data.description.task, data.description.num_classes) == (task, num_classes)


def test_train_on_a_parquet_table_classifies(tmp_path, elsewhere, train_in_this_process):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(0, 1, (300, 4)) + 3 * np.eye(4)[labels]
    path = parquet(tmp_path / "blobs.parquet", **{name: x[:, j] for j, name in enumerate("abcd")},
                   colour=np.array(["blue", "green", "red"])[labels])
    run_dir = tmp_path / "run"
    assert_succeeded(train_in_this_process("data=parquet", f"data.path={path}", "data.target=colour",
                                           "trainer.max_epochs=5", f"hydra.run.dir={run_dir}", cwd=elsewhere))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.8
    assert "data.task=auto: the target 'colour' makes this a multiclass set" in (run_dir / "train.log").read_text()


# --- mistakes -------------------------------------------------------------------------------------------------------

def test_a_missing_file_is_a_data_path_error(tmp_path):
    path = str(tmp_path / "nope.parquet")
    assert error_of(path) == f"data.path: got {path!r}, expected a Parquet file that exists"
    with pytest.raises(ConfigError) as error:
        validate(compose_config("data=parquet", f"data.path={path}", "data.target=y"))
    assert str(error.value) == f"data.path: got {path!r}, expected the path of a file that exists"


def test_a_file_that_is_not_parquet_is_a_data_path_error(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("a,y\n1,2\n")
    assert error_of(str(path)).startswith(f"data.path: got {str(path)!r}, expected a Parquet file (Parquet magic "
                                          f"bytes not found")


def test_a_missing_target_column_lists_the_columns(tmp_path):
    path = parquet(tmp_path / "t.parquet", a=[1], b=[2], label=[3])
    assert error_of(path) == f"data.target: got 'y', expected a column of {path}: a, b, label"


@pytest.mark.parametrize("features", [["a", "q"], ["a", "y"]], ids=["unknown", "the-target"])
def test_a_feature_that_is_not_a_column_other_than_the_target_is_a_data_features_error(tmp_path, features):
    path = parquet(tmp_path / "t.parquet", a=[1], y=[2], b=[3])
    assert error_of(path, features=features) == (f"data.features: got {features[1]!r}, expected columns of {path} "
                                                 f"other than the target: a, b")


@pytest.mark.parametrize("column, problem", [
    ([1.0, 2.0, None, 4.0], "row 3 is null"),
    ([1.0, 2.0, float("nan"), 4.0], "row 3 has nan"),
    ([1.0, 2.0, float("-inf"), 4.0], "row 3 has -inf"),
    (["1", "2", "x", "4"], "row 3 has 'x'"),
    (["1", "2", "", "4"], "row 3 is empty"),
    (["1", None, "x", "4"], "row 2 is null"),
    (pa.array([1, 2, 3, 4], pa.timestamp("ms")), "it holds timestamp[ms]"),
], ids=["null", "nan", "inf", "text", "empty-text", "null-text", "timestamps"])
def test_a_feature_value_that_is_not_a_finite_number_names_the_column_and_row(tmp_path, column, problem):
    path = parquet(tmp_path / "t.parquet", a=[1, 3, 5, 7], b=column, y=[0, 1, 0, 1])
    assert error_of(path) == f"data.path: got {path!r}, expected a finite number in every row of column 'b' ({problem})"


@pytest.mark.parametrize("column, bad", [("b", 1e308), ("y", -1e39)], ids=["feature", "target"])
def test_a_value_beyond_float32_s_range_names_the_column_and_row(tmp_path, column, bad):
    values = {"a": [1.0, 3.0, 5.0], "b": [2.0, 4.0, 6.0], "y": [0.5, 1.5, 2.5]}
    values[column][1] = bad
    path = parquet(tmp_path / "t.parquet", **values)
    assert error_of(path) == (f"data.path: got {path!r}, expected a number within float32's range of ±3.4e+38 in "
                              f"every row of column {column!r} (row 2 has {bad!r})")


@pytest.mark.parametrize("labels, problem", [(["red", None, "blue"], "row 2 is null"),
                                             (["red", "blue", " "], "row 3 is empty")], ids=["null", "empty"])
def test_a_text_target_with_a_missing_value_names_the_row(tmp_path, labels, problem):
    path = parquet(tmp_path / "t.parquet", a=[1, 2, 3], y=labels)
    assert error_of(path) == f"data.path: got {path!r}, expected a value in every row of column 'y' ({problem})"


@pytest.mark.parametrize("label", ["red", 1], ids=["text", "number"])
def test_a_target_of_one_class_is_a_data_target_error(tmp_path, label):
    path = parquet(tmp_path / "t.parquet", a=list(range(30)), y=[label] * 30)
    assert error_of(path) == (f"data.target: got 'y', expected a column whose values differ (every row of {path} "
                              f"has {str(label)!r})")


def test_a_file_without_rows_is_a_data_path_error(tmp_path):
    path = parquet(tmp_path / "t.parquet", a=pa.array([], pa.float64()), y=pa.array([], pa.int64()))
    assert error_of(path) == f"data.path: got {path!r}, expected a Parquet file with at least one row"


def test_text_labels_with_task_regression_is_a_data_task_error(tmp_path):
    path = parquet(tmp_path / "t.parquet", a=list(range(20)), y=["a", "b"] * 10)
    with pytest.raises(ConfigError) as error:
        build_data(compose_config("data=parquet", f"data.path={path}", "data.target=y", "data.task=regression").data)
    assert str(error.value) == "data.task: got 'regression', expected multiclass or binary: the target has text labels"
