"""MetricsLog: metrics.csv, a header and one row per epoch."""

import csv

import pytest

from trainer.observe.metrics_log import MetricsLog


def read_rows(path):
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_metrics_log_writes_a_header_then_one_row_per_append(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    rows = [{"epoch": 0, "train_loss": 0.5, "val_accuracy": 0.75},
            {"epoch": 1, "train_loss": 0.25, "val_accuracy": 0.875},
            {"epoch": 2, "train_loss": 0.125, "val_accuracy": 0.9375}]
    for count, row in enumerate(rows, start=1):
        log.append(row)
        lines = path.read_text().splitlines()
        assert lines[0] == "epoch,train_loss,val_accuracy"
        assert len(lines) == 1 + count
    assert log.rows == rows
    read = read_rows(path)
    assert [{key: float(value) for key, value in row.items()} for row in read] == rows


def test_metrics_log_starts_a_fresh_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("stale,content\n1,2\n")
    MetricsLog(path).append({"epoch": 0, "loss": 1.5})
    assert read_rows(path) == [{"epoch": "0", "loss": "1.5"}]


def test_metrics_log_columns_are_fixed_by_the_first_row(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append({"epoch": 0, "loss": 1.0})
    with pytest.raises(ValueError):
        log.append({"epoch": 1, "loss": 0.5, "new_metric": 2.0})
