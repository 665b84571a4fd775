"""`predict` on rows of a table in the files training reads: a .csv.gz and a Parquet file give what the same rows
as CSV give, and their mistakes end in training's one-line errors, for `input`. (test_prediction.py predicts from
CSV and JSON.)"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.files import parquet_bytes
from helpers.trained_runs import best_checkpoint, compose_command, mistake, raw_table_rows, train_tiny_runs
from trainer.inference.prediction import predict
from trainer.inference.trained_model import load


@pytest.fixture(scope="module")
def classes(tmp_path_factory, offline_data_sets) -> Path:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"), {"classes": ("data=parquet",)})["classes"]


def predictions_for(run_dir: Path, source: Path):
    return predict(load(compose_command("predict", f"ckpt_path={best_checkpoint(run_dir)}", f"input={source}",
                                        "device=cpu")), source)


def test_a_csv_gz_and_a_parquet_file_predict_as_the_csv_of_their_rows(classes, tmp_path):
    header, rows = raw_table_rows()
    text = "\n".join(",".join(row) for row in [header, *rows]) + "\n"
    (tmp_path / "rows.csv").write_text(text)
    (tmp_path / "rows.CSV.GZ").write_bytes(gzip.compress(text.encode()))
    columns = {name: [float(row[j]) for row in rows] for j, name in enumerate(header) if name != "colour"}
    pq.write_table(pa.table(dict(reversed(columns.items()))), tmp_path / "rows.parquet")  # found by name
    expected = predictions_for(classes, tmp_path / "rows.csv")
    assert [p.sample for p in expected] == [f"row {number}" for number in range(1, len(rows) + 1)]
    assert predictions_for(classes, tmp_path / "rows.CSV.GZ") == expected
    assert predictions_for(classes, tmp_path / "rows.parquet") == expected


@pytest.mark.parametrize("name, content, allowed", [
    ("rows.parquet", parquet_bytes(a=[1.0], b=[2.0], d=[4.0]), "a table with the feature columns a, b, c, d (it has "
                                                               "no column 'c')"),
    ("rows.parquet", parquet_bytes(a=[1.0, 2], b=[2.0, None], c=[3.0, 3], d=[4.0, 4]),
     "a finite number in every row of column 'b' (row 2 is null)"),
    ("rows.parquet", parquet_bytes(a=[[1.0]], b=[2.0], c=[3.0], d=[4.0]), "a finite number in every row of column "
                                                                          "'a' (it holds list<"),
    ("rows.parquet", b"a,b,c,d\n1,2,3,4\n", "a Parquet file (Parquet magic bytes not found"),
    ("rows.csv", parquet_bytes(a=[1.0]), "a CSV file of UTF-8 text (it is a Parquet file, not CSV text)"),
    ("rows.csv.gz", gzip.compress(b"a,b,c,d\n1,2,3,4\n" * 1000)[:-20], "a CSV file that can be read ("),
    ("rows.csv.gz", gzip.compress(b"a,b,c,d\n1,2,3,4\n1,2,x,4\n"), "column 'c' (line 3 has 'x')"),
], ids=["parquet-without-a-column", "parquet-null", "parquet-nested", "csv-named-parquet", "parquet-named-csv",
        "truncated-csv-gz", "csv-gz-not-a-number"])
def test_table_mistakes_are_training_s_one_line_errors_for_input(classes, tmp_path, name, content, allowed):
    source = tmp_path / name
    source.write_bytes(content)
    message = mistake("predict", compose_command("predict", f"ckpt_path={best_checkpoint(classes)}",
                                                 f"input={source}", "device=cpu"))
    assert message.startswith(f"input: got '{source}', expected "), message
    assert allowed in message, message
