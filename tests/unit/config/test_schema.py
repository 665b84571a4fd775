"""The typed trainer settings (TrainerConfig, EarlyStoppingConfig): every bad value is a ConfigError naming the key
and the value, and the early-stopping direction follows the monitored metric."""

from __future__ import annotations

import math

import pytest

from conftest import compose_config
from helpers.config_errors import assert_names_key_and_value
from trainer.config import ConfigError, EarlyStoppingConfig, LrFindConfig, TrainerConfig, validate


@pytest.mark.parametrize("key, value", [
    ("max_epochs", 0),
    ("max_epochs", -3),
    ("device", "tpu"),
    ("precision", "64"),
    ("precision", 16),
    ("grad_clip", 0.0),
    ("grad_clip", -1.0),
    ("grad_clip", math.nan),
    ("l1", -0.1),
    ("l1", math.nan),
    ("l2", -1.0),
    ("l2", math.nan),
    ("log_every_n_steps", 0),
    ("eval_batch_size", 0),
    ("resume", "x" * 300 + ".pt"),  # a name too long for the OS
    ("init_from", "x" * 300 + ".pt"),
])
def test_trainer_config_rejects_a_bad_value_naming_key_and_value(key, value):
    with pytest.raises(ConfigError) as error:
        TrainerConfig(**{key: value})
    assert_names_key_and_value(error.value, key, repr(value))


@pytest.mark.parametrize("settings, key", [
    ({"find_lr": True, "inspect": True}, "find_lr"),
    ({"find_lr": True, "resume": "auto"}, "find_lr"),
], ids=["inspect", "resume"])
def test_find_lr_is_refused_with_what_it_cannot_be_combined_with(settings, key):
    with pytest.raises(ConfigError) as error:
        TrainerConfig(**settings)
    assert_names_key_and_value(error.value, key, "True")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [
    ("min_lr", 0.0),
    ("min_lr", -1e-7),
    ("min_lr", math.nan),
    ("max_lr", 1e-8),  # below min_lr
    ("max_lr", math.nan),
    ("num_steps", 1),
    ("stop_factor", 1.0),
    ("stop_factor", math.nan),
])
def test_lr_find_config_rejects_a_bad_value_naming_key_and_value(key, value):
    with pytest.raises(ConfigError) as error:
        LrFindConfig(**{key: value})
    assert_names_key_and_value(error.value, f"lr_find.{key}", repr(value))


@pytest.mark.parametrize("settings", [
    {},
    {"max_epochs": 1, "grad_clip": None, "l1": 0.0, "l2": 0.0},
    {"device": "cpu", "precision": "bf16", "grad_clip": 1e-6, "l1": 1e-4, "l2": 1e-3, "eval_batch_size": 1},
])
def test_trainer_config_accepts_good_values(settings):
    config = TrainerConfig(**settings)
    assert all(getattr(config, key) == value for key, value in settings.items())


@pytest.mark.parametrize("key, value", [
    ("monitor", "val_acc"),
    ("monitor", "train_loss"),
    ("mode", "up"),
    ("patience", 0),
    ("patience", -1),
    ("min_delta", -0.1),
    ("min_delta", math.nan),
])
def test_early_stopping_config_rejects_a_bad_value_naming_key_and_value(key, value):
    with pytest.raises(ConfigError) as error:
        EarlyStoppingConfig(**{key: value})
    assert_names_key_and_value(error.value, f"early_stopping.{key}", repr(value))


@pytest.mark.parametrize("monitor, mode, direction", [
    ("val_accuracy", None, "max"),
    ("val_r2", None, "max"),
    ("val_loss", None, "min"),
    ("val_mse", None, "min"),
    ("val_rmse", None, "min"),
    ("val_loss", "max", "max"),
    ("val_accuracy", "min", "min"),
])
def test_early_stopping_direction_follows_the_metric_unless_mode_is_given(monitor, mode, direction):
    assert EarlyStoppingConfig(monitor=monitor, mode=mode).direction == direction


def test_a_filled_in_direction_does_not_leak_into_the_default_mode():
    assert EarlyStoppingConfig(monitor="val_accuracy").direction == "max"
    assert EarlyStoppingConfig().mode is None
    assert validate(compose_config("data=regression", "trainer.early_stopping.monitor=val_r2")
                    ).early_stopping.direction == "max"
    assert validate(compose_config()).early_stopping.direction == "min"



# --- debug modes: fast_dev_run, overfit_batches, limit_*_batches ------------------------------------------------

@pytest.mark.parametrize("settings", [
    {"fast_dev_run": True},
    {"fast_dev_run": 5},
    {"fast_dev_run": 0},
    {"overfit_batches": 2},
    {"limit_train_batches": 1, "limit_val_batches": 0.25, "limit_test_batches": 1.0},
    {"limit_train_batches": 1e-9},
    {"fast_dev_run": True, "init_from": None, "max_epochs": 7},
])
def test_debug_modes_accept_good_values(settings):
    config = TrainerConfig(**settings)
    assert all(getattr(config, key) == value for key, value in settings.items())


@pytest.mark.parametrize("settings, key, value", [
    ({"limit_train_batches": 0}, "limit_train_batches", "0"),
    ({"limit_val_batches": 0.0}, "limit_val_batches", "0.0"),
    ({"limit_test_batches": 1.5}, "limit_test_batches", "1.5"),
    ({"limit_train_batches": -2}, "limit_train_batches", "-2"),
    ({"limit_val_batches": math.nan}, "limit_val_batches", "nan"),
    ({"limit_train_batches": True}, "limit_train_batches", "True"),
    ({"fast_dev_run": -1}, "fast_dev_run", "-1"),
    ({"overfit_batches": -1}, "overfit_batches", "-1"),
    ({"fast_dev_run": True, "resume": "auto"}, "fast_dev_run", "True"),
    ({"fast_dev_run": 2, "inspect": True}, "fast_dev_run", "2"),
    ({"fast_dev_run": True, "overfit_batches": 1}, "fast_dev_run", "True"),
    ({"fast_dev_run": True, "limit_train_batches": 0.5}, "fast_dev_run", "True"),
    ({"overfit_batches": 1, "limit_val_batches": 3}, "overfit_batches", "1"),
    ({"overfit_batches": 1, "limit_train_batches": 1}, "overfit_batches", "1"),
])
def test_debug_modes_refuse_a_bad_value_or_combination_naming_the_key(settings, key, value):
    with pytest.raises(ConfigError) as error:
        TrainerConfig(**settings)
    assert_names_key_and_value(error.value, key, value)


@pytest.mark.parametrize("settings, limits", [
    ({}, (1.0, 1.0, 1.0)),
    ({"limit_train_batches": 3, "limit_test_batches": 0.5}, (3, 1.0, 0.5)),
    ({"fast_dev_run": True}, (1, 1, 1)),
    ({"fast_dev_run": 4}, (4, 4, 4)),
])
def test_batch_limits_are_fast_dev_run_s_or_the_limits(settings, limits):
    assert TrainerConfig(**settings).batch_limits == limits


@pytest.mark.parametrize("override, message", [
    ("trainer.fast_dev_run=true trainer.resume=auto", "trainer.fast_dev_run: got True, expected false when resume"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches: got 0, expected an integer >= 1"),
])
def test_a_debug_mode_mistake_in_a_composed_config_names_the_trainer_key(override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate(compose_config(*override.split()))
