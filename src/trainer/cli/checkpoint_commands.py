"""The commands that read a checkpoint train wrote: `evaluate` (trainer.inference.evaluation), `predict`
(trainer.inference.prediction) and `train-export` (trainer.inference.export), each configured by its own YAML
(configs/evaluate.yaml, predict.yaml, export.yaml). A mistake ends them in one line and exit code 2; they write
nothing of Hydra's."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Callable, Iterator

import hydra
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.failures import refused_writes_in_one_line
from trainer.cli.mistakes import describe_config_error, describe_mistake
from trainer.cli.usage import exit_with_usage_error
from trainer.config import ConfigError, config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _evaluate_app(cfg: DictConfig) -> None:
    from trainer.inference import evaluation

    with _mistakes_in_one_line("evaluate"):
        evaluation.main(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def _predict_app(cfg: DictConfig) -> None:
    from trainer.inference import prediction

    with _mistakes_in_one_line("predict"):
        prediction.main(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def _export_app(cfg: DictConfig) -> None:
    from trainer.inference import export

    with _mistakes_in_one_line("train-export"):
        export.main(cfg)


def evaluate() -> None:
    """Console entry point of `evaluate`: a checkpoint's test metrics, and a classifier's confusion matrix."""
    _run_checkpoint_command(_evaluate_app, "evaluate")


def predict() -> None:
    """Console entry point of `predict`: a checkpoint's predictions for images or rows of a table."""
    _run_checkpoint_command(_predict_app, "predict")


def export() -> None:
    """Console entry point of `train-export` (a shell's builtin `export` would shadow a script of that name): a
    checkpoint's model as NAME.safetensors and NAME.json, to share without code."""
    _run_checkpoint_command(_export_app, "train-export")


def _run_checkpoint_command(app: Callable[[], None], command: str) -> None:
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us as exceptions, for one line
    try:
        with refused_writes_in_one_line(command):
            app()
    except (HydraException, OmegaConfBaseException) as error:
        exit_with_usage_error(command, describe_config_error(error, command))
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)


@contextlib.contextmanager
def _mistakes_in_one_line(command: str) -> Iterator[None]:
    """A mistake found inside a command's job ends it in one line; exiting here, inside the job, keeps Hydra from
    adding its own report."""
    with refused_writes_in_one_line(command):
        try:
            yield
        except (ConfigError, InstantiationException) as error:
            exit_with_usage_error(command, describe_mistake(error, command))
