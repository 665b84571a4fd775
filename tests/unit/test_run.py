"""`trainer.run.train` in-process: the summary it writes, the loss a data option brings, seeding."""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from trainer.training.checkpoint import load_checkpoint
from trainer.run import build, execute, train

SMALL_MLP = "model.hidden_sizes=[32]"


@pytest.fixture
def restore_deterministic_algorithms():
    """trainer.deterministic=true switches torch to deterministic kernels for the whole process; undo it."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def train_in(run_dir: Path, *overrides: str) -> float:
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(compose_config("trainer.device=cpu", SMALL_MLP, *overrides), run_dir)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]


@pytest.mark.parametrize("data, test_metrics", [
    (["data=digits"], {"loss", "accuracy"}),
    (["data=regression", "data.n_samples=500"], {"loss", "mse", "rmse", "r2"}),
], ids=["digits", "regression"])
def test_train_returns_the_best_value_and_writes_the_summary(run_dir, caplog, data, test_metrics):
    caplog.set_level(logging.INFO, logger="trainer.run")
    best_value = train_in(run_dir, *data, "trainer.max_epochs=2")
    summary = read_summary(run_dir)

    assert best_value == summary["best_value"]
    assert set(summary["test"]) == test_metrics
    assert all(math.isfinite(value) for value in summary["test"].values())
    assert summary["monitor"] == "val_loss"
    assert (summary["epochs"], summary["stop_reason"], summary["device"]) == (2, "max_epochs", "cpu")
    assert isinstance(summary["train_seconds"], float) and summary["train_seconds"] >= 0
    val_losses = [float(row["val_loss"]) for row in read_metrics(run_dir)]
    assert summary["best_epoch"] == 1 + val_losses.index(min(val_losses))
    assert best_value == pytest.approx(min(val_losses), rel=1e-6)
    assert f"test metrics (best epoch {summary['best_epoch']} of 2" in caplog.text


def test_regression_summary_reports_rmse_as_the_root_of_mse(run_dir):
    train_in(run_dir, "data=regression", "data.n_samples=500", "trainer.max_epochs=1")
    test = read_summary(run_dir)["test"]
    assert test["rmse"] == pytest.approx(math.sqrt(test["mse"]), rel=1e-5)


def test_test_metrics_come_from_the_best_epoch_not_the_last(tmp_path):
    # mode=max on a falling val_loss makes epoch 1 the best: the test must score its weights, not the last ones.
    overrides = ("trainer.max_epochs=3", "trainer.early_stopping.mode=max")
    train_in(tmp_path / "run", *overrides)
    summary = read_summary(tmp_path / "run")
    assert summary["best_epoch"] == 1

    fresh = build(compose_config("trainer.device=cpu", SMALL_MLP, *overrides), tmp_path)
    for checkpoint, should_match in (("best.pt", True), ("last.pt", False)):
        fresh.engine.model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint)["model"])
        loss = fresh.engine.evaluate(fresh.test)["loss"]
        assert (loss == pytest.approx(summary["test"]["loss"], rel=1e-5)) is should_match, checkpoint


@pytest.mark.parametrize("data, loss_target", [
    (["data=digits"], "torch.nn.CrossEntropyLoss"),
    (["data=breast_cancer"], "torch.nn.BCEWithLogitsLoss"),
    (["data=regression", "data.n_samples=300"], "torch.nn.MSELoss"),
], ids=["digits", "breast_cancer", "regression"])
def test_the_data_option_s_loss_is_recorded_in_the_checkpoint(run_dir, data, loss_target):
    train_in(run_dir, *data, "trainer.max_epochs=1")
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert checkpoint["config"]["loss"]["_target_"] == loss_target


def test_same_seed_with_deterministic_gives_identical_metrics(tmp_path, restore_deterministic_algorithms):
    def metrics_without_timing(run_dir: Path) -> list[dict[str, str]]:
        train_in(run_dir, "seed=7", "trainer.deterministic=true", "trainer.max_epochs=2")
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(run_dir)]

    first, second = metrics_without_timing(tmp_path / "a"), metrics_without_timing(tmp_path / "b")
    assert len(first) == 2
    assert first == second


def test_seed_zero_is_a_real_seed_and_other_seeds_give_other_weights(tmp_path):
    for name, seed in (("zero", 0), ("zero_again", 0), ("one", 1)):
        train_in(tmp_path / name, f"seed={seed}", "trainer.max_epochs=1")
    zero, zero_again, one = (model_weights(tmp_path / name) for name in ("zero", "zero_again", "one"))
    assert all(torch.equal(zero[key], zero_again[key]) for key in zero)
    assert not any(torch.equal(zero[key], one[key]) for key in zero)


@pytest.mark.parametrize("monitor, worst", [("val_loss", math.inf), ("val_accuracy", -math.inf)])
def test_a_diverged_run_writes_a_strict_json_summary_and_returns_the_worst_value_to_sweepers(run_dir, monitor, worst):
    best = train_in(run_dir, "optimizer=sgd", "optimizer.lr=1e4", "trainer.max_epochs=3",
                    f"trainer.early_stopping.monitor={monitor}")
    summary = json.loads((run_dir / "summary.json").read_text(), parse_constant=lambda token: pytest.fail(token))
    assert (summary["stop_reason"], summary["test"], summary["best_epoch"]) == ("diverged", {}, None)
    assert best == worst  # Optuna refuses nan, and ranks inf last


def test_dataloader_and_device_pipelines_train_bit_identically(tmp_path, restore_deterministic_algorithms):
    def run(pipeline: str, *extra: str) -> tuple[dict[str, torch.Tensor], list[dict[str, str]]]:
        run_dir = tmp_path / pipeline
        train_in(run_dir, "seed=3", "trainer.deterministic=true", "trainer.max_epochs=2", f"data.pipeline={pipeline}",
                 *extra)
        weights = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
        return weights, [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(run_dir)]

    device_weights, device_metrics = run("device")
    loader_weights, loader_metrics = run("dataloader", "data.num_workers=0")
    assert len(device_metrics) == 2 and device_metrics[0] != device_metrics[1]
    assert loader_metrics == device_metrics
    assert device_weights.keys() == loader_weights.keys()
    assert all(torch.equal(device_weights[key], loader_weights[key]) for key in device_weights)


@pytest.mark.parametrize("overrides, fused", [
    (("optimizer=adam",), True),
    (("optimizer=adamw",), True),
    (("optimizer=adam", "optimizer.fused=false"), False),
    (("optimizer=sgd",), None),  # no fused key: torch's default
])
def test_adam_runs_fused_on_the_cpu_unless_told_otherwise(run_dir, overrides, fused):
    run = build(compose_config("trainer.device=cpu", *overrides), run_dir)
    assert run.engine.optimizer.defaults.get("fused") is fused



def test_a_finished_run_leaves_no_dataloader_workers_behind(tmp_path):
    """A sweep runs job after job in one process, and Hydra keeps a failed job's exception, whose traceback holds
    the run: each job's workers end with its run, not when the run is collected."""
    cfg = compose_config("trainer.device=cpu", SMALL_MLP, "trainer.max_epochs=1", "data.pipeline=dataloader",
                         "data.num_workers=1")
    run = build(cfg, tmp_path)
    execute(run, tmp_path)
    assert multiprocessing.active_children() == []
