"""The `train` command: Hydra composes the config, `validate` checks it, `trainer.run` trains.

A user's mistake (an unknown option, a wrong type, a value out of range, a device this machine lacks) ends the
command with exit code 2 and one line naming the key, the value and what is allowed: no traceback, and nothing
written, because the check runs before Hydra creates the run directory. torch is imported only once a run
starts, so `train --help` and config errors come back quickly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from trainer.config import ConfigError, config_dir, validate

USAGE_ERROR = 2


class ValidateBeforeRun(Callback):
    """Hydra calls this after composing the config and before it creates the run directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from trainer.device import resolve_device

        resolve_device(validate(config).device)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_app(cfg: DictConfig) -> float:
    from trainer.run import train as run

    return run(cfg, Path(HydraConfig.get().runtime.output_dir))


def train() -> None:
    """Console entry point of `train` and `python -m trainer`."""
    # Hydra prints its own multi-line report of a config error unless asked to raise it; we make it one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _train_app()
    except ConfigError as error:
        _exit_with(str(error))
    except (HydraException, OmegaConfBaseException) as error:
        _exit_with(describe_config_error(error))


def describe_config_error(error: Exception) -> str:
    """One line for Hydra's and OmegaConf's composition errors: the key, the value and what is allowed."""
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, "one of " + ", ".join(sorted(error.options))))
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        key = cause.full_key
        if isinstance(cause, ConfigKeyError):
            return f"{key}: no such setting (`train --cfg job` lists the settings)"
        expected = cause.ref_type_str or "a value of the declared type"
        return str(ConfigError(key, cause.value, expected.replace("Optional[", "").rstrip("]") + " value"))
    return " ".join(str(error).split("\n")[0].split())


def _exit_with(message: str) -> NoReturn:
    print(f"train: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
