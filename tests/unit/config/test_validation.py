"""`validate` on composed configs: every bad value is a ConfigError naming the key and the value, and every option
of every config group composes and validates as shipped."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose_config, options
from helpers.config_errors import assert_names_key_and_value
from trainer.config import ConfigError, EarlyStoppingConfig, TrainerConfig, config_dir, validate
from trainer.vocabulary import LOSSES


# --- validate on composed configs -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, key, value_text", [
    (["data.batch_size=abc"], "data.batch_size", "'abc'"),
    (["data.batch_size=0"], "data.batch_size", "0"),
    (["data.batch_size=2.5"], "data.batch_size", "2.5"),
    (["data.batch_size=???"], "data.batch_size", "'???'"),
    (["optimizer.lr=-1"], "optimizer.lr", "-1"),
    (["optimizer.lr=0"], "optimizer.lr", "0"),
    (["optimizer.lr=1" + "0" * 400], "optimizer.lr", "1" + "0" * 400),  # an int too large for a float
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas", "[0.9, 1.0]"),
    (["model=dropout_net", "model.dropout=1.5"], "model.dropout", "1.5"),
    (["model.hidden_sizes=[0]"], "model.hidden_sizes", "[0]"),
    (["model.activation=swish"], "model.activation", "'swish'"),
    (["model=transformer", "model.d_model=30"], "model.d_model", "30"),
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "data.val_fraction", "0.6"),
    (["data=moons", "data.noise=-1"], "data.noise", "-1"),
    (["loss=cross_entropy", "loss.label_smoothing=1.0"], "loss.label_smoothing", "1.0"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma", "0"),
    (["scheduler=cosine", "scheduler.interval=batch"], "scheduler.interval", "'batch'"),
    (["seed=-1"], "seed", "-1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs", "0"),
    (["trainer.grad_clip=0"], "trainer.grad_clip", "0.0"),
    (["trainer.early_stopping.patience=0"], "trainer.early_stopping.patience", "0"),
    (["trainer.early_stopping.monitor=val_acc"], "trainer.early_stopping.monitor", "'val_acc'"),
    (["data.task=ordinal"], "data.task", "'ordinal'"),
    (["data=moons", "data.seed=abc"], "data.seed", "'abc'"),
    (["data.drop_last=maybe"], "data.drop_last", "'maybe'"),
    (["scheduler=plateau", "scheduler.interval=step"], "scheduler.interval", "'step'"),
    (["~data.task"], "data.task", "None"),
    (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite", "'ignore'"),
    (["trainer.max_skipped=-1"], "trainer.max_skipped", "-1"),
    (["trainer.checkpoint.every_n_steps=0"], "trainer.checkpoint.every_n_steps", "0"),
    # settings that contradict each other
    (["trainer.checkpoint.every_n_steps=5", "trainer.checkpoint.save_last=false"],
     "trainer.checkpoint.every_n_steps", "5"),
    (["trainer.resume=auto", "trainer.checkpoint.save_last=false"], "trainer.resume", "'auto'"),
    ([f"trainer.init_from={__file__}", "trainer.resume=auto"], "trainer.init_from", repr(__file__)),
    # a loss or a monitored metric the data's task cannot use
    (["loss=bce"], "loss", "'bce'"),
    (["data=regression", "loss=bce"], "loss", "'bce'"),
    (["data=regression", "loss=cross_entropy"], "loss", "'cross_entropy'"),
    (["loss=mse"], "loss", "'mse'"),
    (["data=moons", "loss=l1"], "loss", "'l1'"),
    (["data=breast_cancer", "loss=smooth_l1"], "loss", "'smooth_l1'"),
    (["data=regression", "trainer.early_stopping.monitor=val_accuracy"], "trainer.early_stopping.monitor",
     "'val_accuracy'"),
    (["trainer.early_stopping.monitor=val_r2"], "trainer.early_stopping.monitor", "'val_r2'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_validate_rejects_a_bad_override_naming_key_and_value(overrides, key, value_text):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert_names_key_and_value(error.value, key, value_text)


@pytest.mark.parametrize("overrides", [
    ["data=breast_cancer", "loss=cross_entropy"],  # two logits for a binary set is fine
    ["data=moons", "loss=bce"],
    ["data=diabetes", "loss=smooth_l1"],
    ["data=regression", "trainer.early_stopping.monitor=val_r2"],
    ["trainer.early_stopping.monitor=val_accuracy"],
])
def test_validate_accepts_a_loss_and_monitor_the_task_can_use(overrides):
    validate(compose_config(*overrides))


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_brings_a_loss_its_task_can_train(data):
    cfg = compose_config(f"data={data}")
    validate(cfg)
    if cfg.data.task == "auto":  # the task, and so the loss, is known once the data is read (test_run checks it)
        assert cfg.loss._target_ == "trainer.losses.for_task"
        return
    option, tasks = LOSSES[cfg.loss._target_]
    assert cfg.data.task in tasks


@pytest.mark.parametrize("order", [["data=regression", "loss=l1"], ["loss=l1", "data=regression"]])
def test_a_loss_on_the_command_line_beats_the_data_option_s_loss(order):
    assert compose_config(*order).loss._target_ == "torch.nn.L1Loss"


def test_the_loss_settings_of_the_data_option_s_loss_can_be_overridden():
    assert compose_config("loss.label_smoothing=0.3").loss.label_smoothing == 0.3


def test_model_rules_leave_a_model_of_your_own_alone():
    cfg = compose_config("model._target_=my_package.Net", "model.activation=silu", "model.dropout=2")
    validate(cfg)
    with pytest.raises(ConfigError, match="^model.activation: got 'silu'"):
        validate(compose_config("model.activation=silu"))


def test_validate_returns_the_typed_trainer_settings():
    settings = validate(compose_config("trainer.max_epochs=7", "trainer.grad_clip=0.5", "trainer.precision=bf16"))
    assert isinstance(settings, TrainerConfig)
    assert (settings.max_epochs, settings.grad_clip, settings.precision) == (7, 0.5, "bf16")
    assert isinstance(settings.early_stopping, EarlyStoppingConfig)


SWEEP_GROUPS = ["hparams_search", "hydra"]
"""How a sweep runs (Optuna's sweeper, the Slurm launcher): test_sweep_configs, test_slurm_launcher and the e2e
sweeps cover them."""
RECIPE_GROUPS = ["experiment"]
"""Recipes that set the other groups (# @package _global_): test_experiment_configs and e2e/test_experiments."""
GROUPS = sorted(path.name for path in config_dir().iterdir()
                if path.is_dir() and path.name not in SWEEP_GROUPS + RECIPE_GROUPS)


def test_the_config_groups_are_the_ones_the_suite_covers():
    assert GROUPS == ["data", "logger", "loss", "model", "optimizer", "scheduler"]
    assert (sorted(path.name for path in config_dir().iterdir() if path.is_dir())
            == sorted(GROUPS + SWEEP_GROUPS + RECIPE_GROUPS))


# A loss option needs a data set whose task it can train (the default, digits, is multiclass).
DATA_FOR_LOSS = {"bce": "data=moons", "mse": "data=regression", "smooth_l1": "data=regression",
                 "l1": "data=regression"}


@pytest.mark.parametrize("group, option", [(group, option) for group in GROUPS for option in options(group)])
def test_every_option_of_every_group_composes_and_validates(group, option):
    partner = [DATA_FOR_LOSS[option]] if group == "loss" and option in DATA_FOR_LOSS else []
    cfg = compose_config(f"{group}={option}", *partner, shrink=False)
    assert isinstance(validate(cfg), TrainerConfig)
    shipped = OmegaConf.load(config_dir() / group / f"{option}.yaml") or OmegaConf.create()
    shipped.pop("defaults", None)  # a defaults list composes other groups; it is not a value of this one
    composed = OmegaConf.to_container(cfg[group])
    given = [key for key in shipped if not OmegaConf.is_missing(shipped, key)]  # ??? is for the user to give
    assert {key: composed.get(key) for key in given} == {key: OmegaConf.to_container(shipped)[key] for key in given}

