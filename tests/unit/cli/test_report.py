"""`train-report`: a sweep's jobs in one table, best first, from hand-written job folders (tests/e2e/test_sweeps.py
reports on a real sweep, tests/e2e/test_train_report.py runs the command)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from helpers.files import made_up_rows, png_size, write_metrics_csv
from helpers.sweeps import summary, write_job, write_sweep
from trainer.cli.report import main
from trainer.observe import NO_SUMMARY, Job, job_labels


HEADER = ("| job | optimizer | optimizer.lr | monitor | best_value | best_epoch | epochs | stop_reason | test_loss "
          "| test_accuracy |")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """The five jobs of helpers.sweeps.write_sweep."""
    return write_sweep(tmp_path / "sweep")


def report(*args: str, capsys: pytest.CaptureFixture) -> str:
    main([*map(str, args)])
    return capsys.readouterr().out


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ")][1:]


def jobs_in_order(markdown: str) -> list[str]:
    """The table's first column: the job folders, best first."""
    return [row.split(" | ")[0].removeprefix("| ") for row in table_rows(markdown)]


def test_jobs_are_ranked_best_first_then_interrupted_then_without_summary(sweep, capsys):
    markdown = report(sweep, capsys=capsys)

    assert markdown.startswith(f"# {sweep}: 5 jobs, ranked by val_loss (lower is better)\n")
    assert "\nSame in every job: data=moons\n" in markdown
    assert HEADER in markdown.splitlines()
    assert table_rows(markdown) == [
        "| 1 | sgd | 0.01 | val_loss | 0.2000 | 3 | 5 | max_epochs | 0.2100 | 0.9000 |",
        "| 10 | adam | 0.1 | val_loss | 0.2500 | 3 | 5 | early_stopping | 0.2600 | 0.9000 |",
        "| 0 | sgd | 0.001 | val_loss | 0.3012 | 3 | 5 | max_epochs | 0.3112 | 0.9000 |",
        "| 2 | adam | 0.001 | val_loss | 0.1000 | 3 | 5 | interrupted | 0.1100 | 0.9000 |",
        f"| 3 | adam | 0.01 |  |  |  |  | {NO_SUMMARY} |  |  |",
    ]
    assert (sweep / "report.md").read_text() == markdown


def test_the_csv_has_a_column_per_override_key_and_full_precision(sweep, capsys):
    report(sweep, capsys=capsys)

    with open(sweep / "report.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["job", "data", "optimizer", "optimizer.lr", "monitor", "best_value", "best_epoch",
                             "epochs", "stop_reason", "test_loss", "test_accuracy"]
    assert [row["job"] for row in rows] == ["1", "10", "0", "2", "3"]
    assert rows[2] == {"job": "0", "data": "moons", "optimizer": "sgd", "optimizer.lr": "0.001",
                       "monitor": "val_loss", "best_value": "0.30123456789", "best_epoch": "3", "epochs": "5",
                       "stop_reason": "max_epochs", "test_loss": "0.3112", "test_accuracy": "0.9"}
    assert rows[4]["stop_reason"] == NO_SUMMARY
    assert rows[4]["best_value"] == rows[4]["test_loss"] == ""


def test_a_maximised_metric_ranks_the_highest_first(tmp_path, capsys):
    for name, accuracy in [("0", 0.8), ("1", 0.95), ("2", 0.9)]:
        write_job(tmp_path, name, [f"seed={name}"], summary(accuracy, monitor="val_accuracy"))

    markdown = report(tmp_path, capsys=capsys)

    assert "ranked by val_accuracy (higher is better)" in markdown.splitlines()[0]
    assert jobs_in_order(markdown) == ["1", "2", "0"]


@pytest.mark.parametrize("mode, order", [("min", ["0", "2", "1"]), ("max", ["1", "2", "0"]), (None, ["1", "2", "0"])])
def test_jobs_are_ranked_in_the_direction_their_run_chose_its_best_epoch_by(tmp_path, capsys, mode, order):
    """summary.json's mode (trainer.early_stopping.mode) decided the run's best.pt; the report ranks by it too. A
    summary without one (written before it said so) goes by the metric: accuracy, higher is better."""
    for name, accuracy in [("0", 0.8), ("1", 0.95), ("2", 0.9)]:
        write_job(tmp_path, name, [f"seed={name}"], summary(accuracy, monitor="val_accuracy") | {"mode": mode})

    markdown = report(tmp_path, capsys=capsys)

    better = "lower" if mode == "min" else "higher"
    assert f"ranked by val_accuracy ({better} is better)" in markdown.splitlines()[0]
    assert jobs_in_order(markdown) == order


def test_jobs_of_different_monitors_are_ranked_within_each_and_a_warning_says_so(tmp_path, capsys):
    write_job(tmp_path, "0", ["trainer.early_stopping.monitor=val_loss"], summary(0.3))
    write_job(tmp_path, "1", ["trainer.early_stopping.monitor=val_accuracy"], summary(0.8, monitor="val_accuracy"))
    write_job(tmp_path, "2", ["trainer.early_stopping.monitor=val_loss"], summary(0.2))
    write_job(tmp_path, "3", ["trainer.early_stopping.monitor=val_accuracy"], summary(0.9, monitor="val_accuracy"))

    main([str(tmp_path)])
    out, err = capsys.readouterr()

    assert err == ("train-report: warning: the jobs monitor different metrics (val_accuracy, val_loss); each is "
                   "ranked among the jobs with the same monitor\n")
    assert "ranked within each monitor: val_accuracy (higher is better), val_loss (lower is better)" in out
    assert jobs_in_order(out) == ["3", "1", "2", "0"]


def test_job_folders_at_any_depth_and_the_files_where_asked(tmp_path, capsys):
    write_job(tmp_path / "sweep", "lr_small/0", ["optimizer.lr=0.001"], summary(0.3))
    write_job(tmp_path / "sweep", "lr_large/0", ["optimizer.lr=0.1"], summary(0.2))
    markdown_path, csv_path = tmp_path / "out.md", tmp_path / "out.csv"

    markdown = report(tmp_path / "sweep", "--markdown", markdown_path, "--csv", csv_path, capsys=capsys)

    assert jobs_in_order(markdown) == ["lr_large/0", "lr_small/0"]
    assert markdown_path.read_text() == markdown
    assert csv_path.read_text().splitlines()[1].startswith("lr_large/0,0.1,val_loss,0.2,")
    assert not (tmp_path / "sweep" / "report.md").exists()


@pytest.mark.parametrize("name, make, expected", [
    ("sweep", lambda path: None, "expected a directory that exists"),
    ("x" * 300, lambda path: None, "expected a directory that exists"),  # a name too long for the OS
    ("sweep", lambda path: (path / "0").mkdir(parents=True), "expected a sweep directory: no folder below it holds"),
], ids=["no-such-directory", "a-name-too-long-for-the-os", "no-job-folders"])
def test_a_folder_that_is_not_a_sweep_exits_2_with_one_line(tmp_path, capsys, name, make, expected):
    sweep_dir = tmp_path / name
    make(sweep_dir)

    with pytest.raises(SystemExit) as exit:
        main([str(sweep_dir)])

    out, err = capsys.readouterr()
    assert exit.value.code == 2
    assert out == ""
    assert err.startswith(f"train-report: error: SWEEP_DIR: got '{sweep_dir}', {expected}")
    assert err.count("\n") == 1
    assert not os.path.exists(sweep_dir / "report.md")


def write_2_mib(path: Path) -> None:
    """A sparse file: 2 MiB of zeros that take no room on the disk."""
    with path.open("wb") as file:
        file.truncate(2 << 20)


# (a file of job 1, what it holds (text, bytes, or a function that makes it), what the warning says is wrong)
BAD_JOB_FILES = [
    (".hydra/overrides.yaml", "- !!python/object/apply:os.system ['touch {marker}']\n",
     "not the YAML list train writes (could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    (".hydra/overrides.yaml", "- optimizer=sgd\n- [unclosed\n", "not the YAML list train writes (while parsing"),
    (".hydra/overrides.yaml", "optimizer: sgd\n", "not the YAML list of key=value strings train writes (it holds "
                                                  "{'optimizer': 'sgd'})"),
    (".hydra/overrides.yaml", b"- optimizer=\xff\n", "not a readable UTF-8 file ('utf-8' codec can't decode"),
    ("summary.json", json.dumps({**summary(0.2), "best_value": "abc"}), "'best_value' is 'abc', not what train "
                                                                        "writes there"),
    ("summary.json", json.dumps({**summary(0.2), "epochs": []}), "'epochs' is [], not what train writes there"),
    ("summary.json", json.dumps({**summary(0.2), "test": {"loss": "low"}}),
     "the test metric 'loss' is 'low', not a number"),
    ("summary.json", json.dumps({key: value for key, value in summary(0.2).items() if key != "stop_reason"}),
     "it has no 'stop_reason', which train writes"),
    ("summary.json", json.dumps([summary(0.2)]), "not the JSON object train writes (it holds [{'test': "),
    ("summary.json", json.dumps(summary(0.2))[:40], "not JSON, or cut short while being written (Expecting"),
    ("summary.json", "[" * 100_000 + "]" * 100_000, "not JSON, or cut short while being written (maximum "
                                                    "recursion depth exceeded"),
    ("summary.json", b'{"monitor": "\xff"}', "not a readable UTF-8 file ('utf-8' codec can't decode"),
    ("summary.json", os.mkfifo, "not a file of at most 1048576 bytes, as train writes"),  # reading would block
    ("summary.json", write_2_mib, "not a file of at most 1048576 bytes, as train writes"),
]


@pytest.mark.parametrize("name, content, problem", BAD_JOB_FILES,
                         ids=["overrides-python-tag", "overrides-not-yaml", "overrides-not-a-list",
                              "overrides-not-utf8", "summary-text-for-a-number", "summary-list-for-epochs",
                              "summary-text-for-a-metric", "summary-without-a-key", "summary-a-list",
                              "summary-cut-short", "summary-nested-too-deeply", "summary-not-utf8", "summary-fifo",
                              "summary-too-large"])
def test_a_job_with_a_file_train_did_not_write_is_left_out_with_a_warning_naming_it(sweep, tmp_path, capsys, name,
                                                                                    content, problem):
    bad_file = sweep / "1" / name
    marker = tmp_path / "code-ran"
    bad_file.unlink()
    if isinstance(content, bytes):
        bad_file.write_bytes(content)
    elif isinstance(content, str):
        bad_file.write_text(content.replace("{marker}", str(marker)))
    else:
        content(bad_file)

    main([str(sweep)])
    out, err = capsys.readouterr()

    assert err.startswith(f"train-report: warning: {bad_file}: {problem}"), err
    assert err.endswith("; job 1 is left out\n") and err.count("\n") == 1, err
    assert out.startswith(f"# {sweep}: 4 jobs, ranked by val_loss (lower is better)\n")
    assert jobs_in_order(out) == ["10", "0", "2", "3"]
    assert not marker.exists()


def test_a_sweep_of_which_no_job_can_be_read_exits_2_after_a_warning_for_each(tmp_path, capsys):
    for name in ("0", "1"):
        write_job(tmp_path, name, ["seed=0"], summary(0.2))
        (tmp_path / name / "summary.json").write_text("[]")

    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path)])

    out, err = capsys.readouterr()
    assert exit.value.code == 2
    assert out == ""
    assert err.splitlines() == [
        f"train-report: warning: {tmp_path / '0' / 'summary.json'}: not the JSON object train writes (it holds []); "
        f"job 0 is left out",
        f"train-report: warning: {tmp_path / '1' / 'summary.json'}: not the JSON object train writes (it holds []); "
        f"job 1 is left out",
        f"train-report: error: SWEEP_DIR: got '{tmp_path}', expected a sweep with a job that can be read (all 2 are "
        f"left out: see the warnings)"]


def test_a_metrics_csv_train_did_not_write_leaves_out_that_job_s_curves_with_a_warning(sweep, capsys):
    for job in ("0", "10"):
        write_metrics_csv(sweep / job, made_up_rows(epochs=3))
    (sweep / "1" / "metrics.csv").write_bytes(b"epoch,step,lr,train_loss,val_loss\n1,10,0.001,\xff,1\n")

    main([str(sweep)])
    out, err = capsys.readouterr()

    assert err.startswith(f"train-report: warning: {sweep / '1' / 'metrics.csv'}: not the metrics.csv train writes "
                          f"('utf-8' codec can't decode byte 0xff"), err
    assert err.endswith("; the curves of job 1 are left out\n") and err.count("\n") == 1, err
    assert out.endswith(f"\nLearning curves of the 2 jobs with a metrics.csv: {sweep / 'curves.png'}\n")
    assert jobs_in_order(out) == ["1", "10", "0", "2", "3"]  # its row stays: only its curves are left out


def test_the_curves_of_the_jobs_with_a_metrics_csv_go_to_curves_png(sweep, capsys):
    for job in ("0", "1", "10"):  # 3 and the interrupted 2 have none
        write_metrics_csv(sweep / job, made_up_rows(epochs=int(job) + 2))

    out = report(sweep, capsys=capsys)

    assert out == (sweep / "report.md").read_text() + (
        f"\nLearning curves of the 3 jobs with a metrics.csv: {sweep / 'curves.png'}\n")
    assert png_size(sweep / "curves.png")[0] > 0


def test_a_report_without_any_metrics_csv_draws_no_curves(sweep, capsys):
    assert report(sweep, capsys=capsys) == (sweep / "report.md").read_text()
    assert not (sweep / "curves.png").exists()


@pytest.mark.parametrize("overrides, labels", [
    ([["data=moons", "seed=0"], ["data=moons", "seed=1"]], ["seed=0", "seed=1"]),
    ([["seed=0", "optimizer=sgd"], ["seed=0"]], ["optimizer=sgd", "b"]),  # nothing of its own: its folder
    ([["seed=0"], ["seed=0"]], ["a", "b"]),
    ([["seed=0", "x=1"], ["seed=0", "x=1"], ["seed=1"]], ["a: seed=0 x=1", "b: seed=0 x=1", "c: seed=1"]),
], ids=["differing", "one-without-any", "all-alike", "not-unique"])
def test_jobs_are_labelled_by_the_overrides_that_tell_them_apart(overrides, labels):
    jobs = [Job(path=name, overrides=dict(override.split("=") for override in job_overrides), summary=None)
            for name, job_overrides in zip("abc", overrides)]

    assert job_labels(jobs) == labels

