"""Gradient health: health.csv's numbers, the warnings for vanishing and exploding gradients, and resume."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_config
from trainer.config import HealthConfig
from trainer.observe.health import GradientHealth, TensorHealth
from trainer.run import build, train


def read_health(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "health.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "trainer.observe.health" and r.levelno == logging.WARNING]


def test_health_csv_checks_the_first_step_and_every_nth_with_sgds_update_ratio(run_dir):
    # Plain SGD moves each tensor by lr * grad: its update-to-weight ratio is lr * grad_norm / weight_norm.
    lr, every = 0.05, 7
    train(compose_config("data=xor", "model.hidden_sizes=[8]", "optimizer=sgd", f"optimizer.lr={lr}",
                         "trainer.max_epochs=2", f"trainer.health.every_n_steps={every}", "trainer.curves=false"),
          run_dir)
    rows = read_health(run_dir)
    steps_per_epoch = 11  # 700 training samples of xor in batches of 64
    expected_steps = [1] + list(range(every, 2 * steps_per_epoch + 1, every))
    names = ["hidden.0.linear.weight", "hidden.0.linear.bias", "head.weight", "head.bias"]

    assert [int(row["step"]) for row in rows] == [step for step in expected_steps for _ in names]
    assert [row["name"] for row in rows[:4]] == names
    for row in rows:
        grad_norm, weight_norm = float(row["grad_norm"]), float(row["weight_norm"])
        assert grad_norm > 0 and weight_norm > 0
        assert float(row["update_ratio"]) == pytest.approx(lr * grad_norm / weight_norm, rel=1e-4)


def test_a_deep_sigmoid_mlp_warns_of_vanishing_gradients_in_its_first_layers_once(run_dir, caplog):
    caplog.set_level(logging.WARNING, logger="trainer.observe.health")
    train(compose_config("data=xor", "model.hidden_sizes=[16,16,16,16,16,16,16,16,16,16]",
                         "model.activation=sigmoid", "trainer.max_epochs=1", "trainer.health.every_n_steps=2",
                         "trainer.curves=false"), run_dir)
    vanishing = [w for w in warnings_of(caplog) if "vanishing gradients" in w]
    first_check = [row for row in read_health(run_dir) if row["step"] == "1"]

    assert vanishing[0].startswith("step 1: vanishing gradients (norm below 1e-06) in hidden.0.linear.weight ")
    assert "model.activation" in vanishing[0] and "head.weight" not in vanishing[0]  # near the loss they are fine
    assert float(first_check[0]["grad_norm"]) < HealthConfig().vanishing_below
    assert sum(w.count("hidden.0.linear.weight ") for w in vanishing) == 1  # once, though every check finds it


def test_a_huge_learning_rate_warns_of_exploding_gradients(run_dir, caplog):
    caplog.set_level(logging.WARNING, logger="trainer.observe.health")
    train(compose_config("data=xor", "model.hidden_sizes=[32]", "optimizer=sgd", "optimizer.lr=1e4",
                         "trainer.max_epochs=1", "trainer.health.every_n_steps=1", "trainer.curves=false"), run_dir)
    exploding = [w for w in warnings_of(caplog) if "exploding gradients (norm above 1000 or not finite) in" in w]

    assert exploding
    assert "optimizer.lr" in exploding[0] and "trainer.grad_clip" in exploding[0]
    assert any(name in exploding[0] for name in ("hidden.0.linear.weight ", "head.weight ", "head.bias "))


@pytest.mark.parametrize("grad_norm, kind", [
    (1e-9, "vanishing"),
    (0.0, "vanishing"),
    (0.5, None),
    (5e3, "exploding"),
    (math.inf, "exploding"),
    (math.nan, "exploding"),
])
def test_a_gradient_norm_is_judged_against_the_bounds_and_warned_once(caplog, grad_norm, kind):
    caplog.set_level(logging.WARNING, logger="trainer.observe.health")
    health = GradientHealth(nn.Linear(2, 1), HealthConfig(vanishing_below=1e-6, exploding_above=1e3), path=None)
    for step in (1, 2):
        health.warn_about([TensorHealth(step, "weight", grad_norm, 1.0, 0.0),
                            TensorHealth(step, "bias", 0.5, 1.0, 0.0)])
    warned = warnings_of(caplog)

    assert health.kind_of(grad_norm) == kind
    assert len(warned) == (0 if kind is None else 1)
    if kind is not None:
        assert warned[0].startswith(f"step 1: {kind} gradients") and f" in weight {grad_norm:.3g}: " in warned[0]


@pytest.mark.parametrize("step, checked", [(1, True), (2, False), (49, False), (50, True), (100, True)])
def test_checks_fall_on_the_first_step_and_every_nth(step, checked):
    assert GradientHealth(nn.Linear(2, 1), HealthConfig(every_n_steps=50), None).due(step) is checked


def test_null_every_n_steps_checks_nothing_and_writes_no_file(run_dir):
    train(compose_config("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                         "trainer.health.every_n_steps=null", "trainer.curves=false"), run_dir)
    assert not (run_dir / "health.csv").exists()


def test_a_resumed_run_drops_the_checks_after_its_checkpoint(tmp_path):
    path = tmp_path / "health.csv"
    health = GradientHealth(nn.Linear(2, 1), HealthConfig(every_n_steps=1), path)
    layer = health.named_parameters[0][1]
    for step in (1, 2, 3):
        before = health.weights_before_step()
        layer.grad = torch.ones_like(layer)
        health.check(step, before)
    health.load_state_dict({"engine": {"global_step": 2}})  # a checkpoint of step 2
    health.on_resume(engine=None)

    with path.open(newline="") as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [1, 2]  # bias had no gradient: one row each


@pytest.mark.parametrize("overrides, key", [
    (["trainer.health.every_n_steps=0"], "trainer.health.every_n_steps"),
    (["trainer.health.vanishing_below=-1"], "trainer.health.vanishing_below"),
    (["trainer.health.exploding_above=1e-9"], "trainer.health.exploding_above"),
])
def test_bad_health_settings_are_refused_naming_the_key(run_dir, overrides, key):
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match=f"^{key}: got"):
        build(compose_config(*overrides), run_dir)
