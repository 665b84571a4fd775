"""The checks of a composed config that run before torch is imported and before anything is written: each key of
the other groups against `RULES`, the keys that depend on one another, the `trainer` group through its schema, and
whether the loss and the monitored metric suit the data's task."""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from trainer.config.errors import ConfigError
from trainer.config.rules import RULES, RULES_OF_DATA_OPTION, is_finite_number
from trainer.config.schema import TrainerConfig
from trainer.vocabulary import LOSSES, TASKS, install_command, measured_metrics

PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"
LOGGER_PACKAGES = {"trainer.loggers.TensorBoardLogger": "tensorboard",
                   "trainer.observe.mlflow_logger.MlflowLogger": "mlflow"}
"""The loggers that need an extra, and the package it installs (also the option's and the extra's name)."""


def validate(cfg: DictConfig) -> TrainerConfig:
    """Check a composed config; return the engine's typed settings. Raises ConfigError naming the first bad key."""
    data, model = cfg.data, cfg.model
    our_model = str(model.get("_target_")).startswith("trainer.models.")
    rules = RULES | RULES_OF_DATA_OPTION.get(data.get("_target_"), {})
    for key, rule in rules.items():
        if key.startswith("model.") and not our_model:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node.keys():
            continue
        if OmegaConf.is_missing(node, leaf):
            raise ConfigError(key, "???", f"{rule.allowed} (a value is required)")
        value = node[leaf]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.accepts(value):
            raise ConfigError(key, value, rule.allowed)
    fractions = (data.val_fraction, data.test_fraction)  # either may be null or auto (data=image_folder)
    if all(is_finite_number(f) for f in fractions) and sum(fractions) >= 1:
        raise ConfigError("data.val_fraction", data.val_fraction,
                          f"a fraction that leaves samples to train: val_fraction + test_fraction < 1 "
                          f"(test_fraction={data.test_fraction})")
    if our_model and "num_heads" in model and "d_model" in model and model.d_model % model.num_heads:
        raise ConfigError("model.d_model", model.d_model,
                          f"a multiple of model.num_heads={model.num_heads} (each head gets d_model/num_heads)")
    if cfg.scheduler.get("_target_") == PLATEAU and cfg.scheduler.get("interval") != "epoch":
        raise ConfigError("scheduler.interval", cfg.scheduler.get("interval"),
                          "epoch (reduce-on-plateau compares the monitored metric, measured once per epoch)")
    logger = cfg.logger.get("_target_") if cfg.get("logger") else None
    if logger in LOGGER_PACKAGES and importlib.util.find_spec(LOGGER_PACKAGES[logger]) is None:
        option = LOGGER_PACKAGES[logger]
        raise ConfigError("logger", option, f"csv, or {option} once its extra is installed: {install_command(option)}")
    try:
        settings: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    except ConfigError as error:
        raise ConfigError(f"trainer.{error.key}", error.value, error.allowed) from None
    check_task_fit(cfg, settings)
    return settings


def check_task_fit(cfg: DictConfig, settings: TrainerConfig) -> None:
    """The loss and the monitored metric must suit the data's task (data.task). With data.task=auto this waits
    until the data is read and the task known (trainer.run checks again then)."""
    task = cfg.data.get("task")
    if task is None:
        raise ConfigError("data.task", task, f"one of {', '.join(TASKS)} (every data config says what it is for)")
    if task == "auto":
        return
    target = cfg.loss.get("_target_")
    if target in LOSSES and task not in LOSSES[target][1]:
        suitable = [name for name, tasks in LOSSES.values() if task in tasks]
        raise ConfigError("loss", LOSSES[target][0], f"one of {', '.join(suitable)} for a {task} set")
    measured = measured_metrics(task)
    if settings.early_stopping.monitor not in measured:
        raise ConfigError("trainer.early_stopping.monitor", settings.early_stopping.monitor,
                          f"one of {', '.join(measured)} (what a {task} set measures)")
