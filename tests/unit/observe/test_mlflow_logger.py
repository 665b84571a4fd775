"""logger=mlflow: what a run wrote, read back with MLflow's own client, in a SQLite store and in a folder store."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from conftest import compose_config
from helpers.commands import assert_succeeded, run_command
from trainer.config import ConfigError, validate
from trainer.models import MLP
from trainer.observe.mlflow_logger import MlflowLogger, flattened
from trainer.run import train

mlflow_tracking = pytest.importorskip("mlflow.tracking")

SMALL = ("data=xor", "model.hidden_sizes=[8]", "trainer.curves=false", "logger=mlflow", "logger.every_n_steps=5")


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch) -> None:
    """A SQLite store keeps its artifacts in mlruns/ of the working directory, as `mlflow ui` expects."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["sqlite", "folder"])
def tracking_uri(request, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}" if request.param == "sqlite" else str(tmp_path / "mlruns")


def only_run(client, experiment_name: str = "trainer"):
    runs = client.search_runs([client.get_experiment_by_name(experiment_name).experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_a_run_logs_the_config_the_epochs_the_steps_and_its_files(run_dir, tracking_uri):
    train(compose_config(*SMALL, "trainer.max_epochs=2", "optimizer.lr=0.02", f"logger.tracking_uri={tracking_uri}"),
          run_dir)
    client = mlflow_tracking.MlflowClient(tracking_uri)
    run = only_run(client)
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert run.data.params["optimizer.lr"] == "0.02" and run.data.params["model.hidden_sizes"] == "[8]"
    for name in ("val_loss", "val_accuracy", "train_loss", "lr"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in history] == [(int(r["epoch"]), pytest.approx(float(r[name]))) for r in rows]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "step/train_loss")] == [5, 10, 15, 20]
    assert "test_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "metrics.csv", "checkpoints"} <= artifacts and "curves.png" not in artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]


class BrokenAtTheThirdStep(MLP):
    """An MLP whose third training forward pass raises, as a bug in a user's model would."""

    def forward(self, x):
        if self.training:
            self.steps = getattr(self, "steps", 0) + 1
            if self.steps == 3:
                raise RuntimeError("a bug in the model")
        return super().forward(x)


def test_a_run_that_raises_ends_its_mlflow_run_as_failed(run_dir, tracking_uri):
    with pytest.raises(RuntimeError, match="a bug in the model"):
        train(compose_config(*SMALL, f"logger.tracking_uri={tracking_uri}",
                             f"model._target_={__name__}.BrokenAtTheThirdStep"), run_dir)
    assert only_run(mlflow_tracking.MlflowClient(tracking_uri)).info.status == "FAILED"


def test_a_resumed_run_continues_its_mlflow_run_and_logs_again_what_came_after_its_checkpoint(run_dir, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train(compose_config(*SMALL, "trainer.max_epochs=1", f"logger.tracking_uri={tracking_uri}"), run_dir)
    client = mlflow_tracking.MlflowClient(tracking_uri)
    first = only_run(client)
    train(compose_config(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto", f"logger.tracking_uri={tracking_uri}"),
          run_dir)

    resumed = only_run(client)
    assert resumed.info.run_id == first.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")] == [1, 2]
    with (run_dir / "metrics.csv").open(newline="") as file:
        last_row = list(csv.DictReader(file))[-1]
    assert resumed.data.metrics["val_loss"] == pytest.approx(float(last_row["val_loss"]))


def test_a_dev_run_logs_no_mlflow_run(run_dir, tracking_uri):
    train(compose_config(*SMALL, "trainer.fast_dev_run=true", f"logger.tracking_uri={tracking_uri}"), run_dir)
    client = mlflow_tracking.MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    assert client.search_runs(experiments) == []


@pytest.mark.parametrize("tracking_uri", ["nowhere://at/all", "sqlite:////proc/no/such/folder/mlflow.db"])
def test_a_store_that_cannot_be_opened_is_refused_naming_logger_tracking_uri(run_dir, tracking_uri):
    with pytest.raises(ConfigError, match=rf"^logger.tracking_uri: got '{tracking_uri}', expected a tracking store"):
        MlflowLogger(run_dir, tracking_uri)


def test_a_config_is_flattened_into_dotted_keys_that_mlflow_takes():
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    long_key = "k" * (MAX_ENTITY_KEY_LENGTH + 10)
    assert flattened({"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]}, "data": {"odd key!": None, long_key: 1},
                      "logger": {}}) == {"optimizer.lr": "0.1", "optimizer.betas": "[0.9, 0.99]",
                                         "data.odd key_": "None", f"data.{long_key}"[:MAX_ENTITY_KEY_LENGTH]: "1",
                                         "logger": "{}"}


def test_mlflow_without_its_extra_is_refused_naming_the_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "mlflow" else find_spec(name, *rest))
    with pytest.raises(ConfigError,
                       match=r"^logger: got 'mlflow', expected .*pip install \"hydra-torch-trainer\[mlflow\]\""):
        validate(compose_config("logger=mlflow"))


@pytest.mark.parametrize("override, key", [("logger.tracking_uri=''", "logger.tracking_uri"),
                                           ("logger.experiment_name=''", "logger.experiment_name"),
                                           ("logger.every_n_steps=0", "logger.every_n_steps")])
def test_bad_mlflow_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: got "):
        validate(compose_config("logger=mlflow", override))


def test_train_help_does_not_import_mlflow():
    command = ("import sys; from trainer.cli import train; sys.argv = ['train', 'logger=mlflow', '--help']\n"
               "try:\n    train()\nexcept SystemExit:\n    pass\nassert 'mlflow' not in sys.modules, 'imported'")
    assert_succeeded(run_command([sys.executable, "-c", command], cwd=Path.cwd()))
