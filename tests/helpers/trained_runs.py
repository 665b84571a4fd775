"""Small runs trained in-process for the commands that read their checkpoints (evaluate, predict, export, and train
carrying a run on), and those commands' configs and one-line mistakes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import DictConfig

import conftest
from conftest import compose_config
from trainer.cli.mistakes import describe_mistake
from trainer.config import ConfigError, config_dir
from trainer.run import build, train

TINY = ("trainer.device=cpu", "model.hidden_sizes=[16]", "trainer.max_epochs=2", "trainer.curves=false")


def compose_command(name: str, *overrides: str) -> DictConfig:
    """The config `evaluate OVERRIDES...` (or `predict ...`) would run, composed from the real YAML."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def train_tiny_runs(folder: Path, runs: dict[str, tuple[str, ...]], tiny: tuple[str, ...] = TINY) -> dict[str, Path]:
    """Each run trained in-process in folder/NAME, on one thread (as the tests that evaluate them run), with the
    overrides `tiny` (those of other models than the MLP: without model.hidden_sizes) first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, overrides in runs.items():
            (folder / name).mkdir()
            train(compose_config(*tiny, *overrides), folder / name)
    finally:
        torch.set_num_threads(threads)
    return {name: folder / name for name in runs}


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.pt"


def summary_test_metrics(run_dir: Path) -> dict[str, float]:
    """summary.json's "test": the metrics the run's own test computed."""
    return json.loads((run_dir / "summary.json").read_text())["test"]


def export_best(runs: dict[str, Path]) -> dict[str, Path]:
    """Each run's best.pt exported beside it (best.safetensors and best.json), as `train-export ckpt_path=...` does."""
    from trainer.inference.export import main

    for run_dir in runs.values():
        main(compose_command("export", f"ckpt_path={best_checkpoint(run_dir)}"))
    return runs


def exported(run_dir: Path) -> Path:
    """The weights export_best wrote for the run (best.json beside them)."""
    return run_dir / "checkpoints" / "best.safetensors"


TABLE_ROWS = 5
"""Rows of the stand-in table each table test predicts."""


def raw_table_rows() -> tuple[list[str], list[list[str]]]:
    """The stand-in table's header and its first TABLE_ROWS rows, as text."""
    with open(conftest.STAND_IN_ROOT / "table.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    return header, rows[:TABLE_ROWS]


def mistake(command: str, cfg: DictConfig) -> str:
    """The one line `command` ends with for this config (its main raises the mistake; the console script prints
    this and exits 2)."""
    from trainer.inference import evaluation
    from trainer.inference import prediction

    with pytest.raises((ConfigError, InstantiationException)) as error:
        {"evaluate": evaluation.main, "predict": prediction.main}[command](cfg)
    return describe_mistake(error.value, command)


SMALL = ("model.hidden_sizes=[32]", "trainer.deterministic=true", "data.batch_size=128",
         "trainer.curves=false")  # the subprocesses that resume it would each spend a second importing matplotlib
"""The run the resume tests carry on, in this process and in `train` processes."""


def first_run(run_dir: Path, *overrides: str) -> Path:
    """The first epoch of SMALL, built and fit in this process: its last.pt."""
    run = build(compose_config(*SMALL, "trainer.max_epochs=1", *overrides), run_dir)
    run.engine.fit(run.train, run.val)
    return run_dir / "checkpoints" / "last.pt"
