"""The `train` command: Hydra composes the config, `validate` checks it, `trainer.run` trains.

A user's mistake (an unknown option, a wrong type, a value out of range, a device this machine lacks) ends the
command with exit code 2 and one line naming the key, the value and what is allowed: no traceback, and nothing
written, because the check runs before Hydra creates the run directory. torch is imported only once a run
starts, so `train --help` and config errors come back quickly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from trainer.config import ConfigError, config_dir, validate

USAGE_ERROR = 2
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ValidateBeforeRun(Callback):
    """Hydra calls this after composing the config and before it creates the run directory. Hydra turns a
    callback's exceptions into warnings and carries on, so a bad config exits here, before anything is written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            settings = validate(config)
            from trainer.device import resolve_device  # imports torch: only once the config is known good

            resolve_device(settings.device)
        except ConfigError as error:
            _exit_with(str(error))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_app(cfg: DictConfig) -> float:
    from trainer.run import train as run

    # Mistakes found only once the run has started (the data contradicts data.task, a component rejects its
    # arguments) also end in one line; exiting here, inside the job, keeps Hydra from adding its own report.
    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as error:
        _exit_with(str(error))
    except InstantiationException as error:
        # A loader or model that found the mistake itself (a missing column, tabular data for a CNN) says so.
        cause = error.__cause__
        _exit_with(str(cause) if isinstance(cause, ConfigError) else describe_config_error(error))


def train() -> None:
    """Console entry point of `train` and `python -m trainer`."""
    # Hydra prints its own multi-line report of a config error unless asked to raise it; we make it one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _train_app()
    except (HydraException, OmegaConfBaseException) as error:
        _exit_with(describe_config_error(error))


def describe_config_error(error: Exception) -> str:
    """One line for Hydra's and OmegaConf's composition errors: the key, the value and what is allowed."""
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, "one of " + ", ".join(sorted(error.options))))
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"{cause.full_key}: no such setting (`train --cfg job` lists the settings)"
    if isinstance(cause, ValidationError) and cause.full_key and dataclasses.is_dataclass(cause.object_type):
        declared = typing.get_type_hints(cause.object_type)[cause.key]
        return str(ConfigError(cause.full_key, cause.value, _describe_type(declared)))
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        # "Error in call to target 'trainer.models.MLP':" + "MLP.__init__() got an unexpected keyword argument"
        return f"{str(error).splitlines()[0]} {type(error.__cause__).__name__}: {error.__cause__}"
    return " ".join(str(error).split("\n")[0].split())


def _describe_type(declared: Any) -> str:
    """int -> 'an integer', Optional[float] -> 'a number, or null'."""
    options = [t for t in typing.get_args(declared) if t is not type(None)] or [declared]
    described = TYPE_NAMES.get(options[0], getattr(options[0], "__name__", str(options[0])))
    return described + (", or null" if type(None) in typing.get_args(declared) else "")


def _exit_with(message: str) -> NoReturn:
    print(f"train: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
