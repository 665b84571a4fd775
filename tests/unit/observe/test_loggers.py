"""logger=tensorboard: the event files hold the epochs' metrics, the steps' loss and lr, histograms and health."""

from __future__ import annotations

import csv

import pytest

from conftest import compose_config
from trainer.config import ConfigError, validate
from trainer.run import train


def test_tensorboard_logs_the_epochs_the_steps_histograms_and_gradient_health(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(compose_config("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=2", "logger=tensorboard",
                         "logger.every_n_steps=5", "trainer.health.every_n_steps=10", "trainer.curves=false"), run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))

    val_loss = events.Scalars("epoch/val_loss")
    assert [(s.step, s.value) for s in val_loss] == [(int(r["step"]), pytest.approx(float(r["val_loss"])))
                                                     for r in rows]
    assert [s.step for s in events.Scalars("train/loss_step")] == [5, 10, 15, 20]  # 22 steps in 2 epochs
    assert {"epoch/train_loss", "epoch/lr", "epoch/val_accuracy", "train/lr"} <= set(tags["scalars"])
    assert {"weights/head.weight", "gradients/head.weight", "weights/hidden.0.linear.bias"} <= set(tags["histograms"])
    assert [s.step for s in events.Scalars("grad_norm/head.weight")] == [1, 10, 20]
    assert "update_ratio/hidden.0.linear.weight" in tags["scalars"]


def test_csv_is_the_default_logger_and_writes_no_event_files(run_dir):
    train(compose_config("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1", "trainer.curves=false"),
          run_dir)
    assert (run_dir / "metrics.csv").exists() and (run_dir / "health.csv").exists()
    assert not (run_dir / "tensorboard").exists()


def test_tensorboard_without_its_extra_is_refused_naming_the_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "tensorboard" else find_spec(name, *rest))
    with pytest.raises(ConfigError, match=r"^logger: got 'tensorboard', expected .*pip install "
                                          r"\"hydra-torch-trainer\[tensorb"):
        validate(compose_config("logger=tensorboard"))


@pytest.mark.parametrize("override, key", [("logger.every_n_steps=0", "logger.every_n_steps"),
                                           ("logger.histograms=maybe", "logger.histograms")])
def test_bad_logger_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: got"):
        validate(compose_config("logger=tensorboard", override))
