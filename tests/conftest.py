"""Shared test helpers: compose the real configs from configs/ (as `train` does) and shrink them to run fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from trainer.config import config_dir

# A few epochs of small batches: enough for a loss to move, short enough for hundreds of runs in the suite.
SHRINK = ("trainer.max_epochs=3", "trainer.early_stopping.patience=null")


def compose_config(*overrides: str, shrink: bool = True) -> DictConfig:
    """The config `train OVERRIDES...` would run, composed from the real YAML."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*(SHRINK if shrink else ()), *overrides])


def options(group: str) -> list[str]:
    """Every option of a config group, as `train --help` lists them."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The suite's models are tiny: on a 2-core machine one thread is many times faster than two that contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
