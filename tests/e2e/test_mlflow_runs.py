"""`train logger=mlflow` as a user runs it: the default store in the folder train runs from, a sweep's jobs in one
experiment, and a store that cannot be opened refused in one line before anything is written."""

from __future__ import annotations

import pytest

from helpers.commands import assert_succeeded

mlflow_tracking = pytest.importorskip("mlflow.tracking")

SMALL = ("data=moons", "model.hidden_sizes=[8]", "trainer.max_epochs=1", "trainer.curves=false", "logger=mlflow")


def test_a_sweeps_jobs_are_runs_of_one_experiment_in_the_default_store(tmp_path, train_in_this_process):
    result = train_in_this_process("-m", *SMALL, "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                                   cwd=tmp_path)

    assert_succeeded(result)
    client = mlflow_tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # what `mlflow ui` there reads
    experiment = client.get_experiment_by_name("moons")  # the data option's name
    runs = client.search_runs([experiment.experiment_id], order_by=["params.`optimizer.lr`"])
    assert [(run.info.run_name, run.data.params["optimizer.lr"]) for run in runs] == [("0", "0.01"), ("1", "0.02")]
    assert {run.data.tags["run_dir"] for run in runs} == {str(tmp_path / "sweep" / job) for job in ("0", "1")}
    assert all(run.data.tags["choice.data"] == "moons" and run.info.status == "FINISHED" for run in runs)


def test_a_store_that_cannot_be_opened_ends_the_command_in_one_line_naming_the_key(tmp_path, train_in_this_process):
    result = train_in_this_process(*SMALL, "logger.tracking_uri=nowhere://at/all", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("train: error: logger.tracking_uri: got 'nowhere://at/all', expected a tracking "
                                    "store MLflow can open")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()
