"""Small runs trained in-process for the commands that read their checkpoints (evaluate, predict, export), and
those commands' configs and one-line mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from conftest import compose_config
from trainer.cli.mistakes import describe_mistake
from trainer.config import ConfigError, config_dir
from trainer.run import train

TINY = ("trainer.device=cpu", "model.hidden_sizes=[16]", "trainer.max_epochs=2", "trainer.curves=false")


def compose_command(name: str, *overrides: str) -> DictConfig:
    """The config `evaluate OVERRIDES...` (or `predict ...`) would run, composed from the real YAML."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def train_tiny_runs(folder: Path, runs: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    """Each run trained in-process in folder/NAME, on one thread (as the tests that evaluate them run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, overrides in runs.items():
            (folder / name).mkdir()
            train(compose_config(*TINY, *overrides), folder / name)
    finally:
        torch.set_num_threads(threads)
    return {name: folder / name for name in runs}


def mistake(command: str, cfg: DictConfig) -> str:
    """The one line `command` ends with for this config (its main raises the mistake; the console script prints
    this and exits 2)."""
    from trainer.inference import evaluation
    from trainer.inference import prediction

    with pytest.raises((ConfigError, InstantiationException)) as error:
        {"evaluate": evaluation.main, "predict": prediction.main}[command](cfg)
    return describe_mistake(error.value, command)


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.pt"
