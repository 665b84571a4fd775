"""Sweeps as the tests compose and write them: the search space of `hparams_search=optuna`, and a sweep's job
folders written by hand (as `train -m` leaves them) for `train-report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import DictConfig

from trainer.config import config_dir


PARSER = OverridesParser.create()


def compose_search(*overrides: str) -> DictConfig:
    """The config of `train hparams_search=optuna OVERRIDES...`, with the hydra node that holds the sweeper."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


def search_space(cfg: DictConfig) -> dict[str, IntervalSweep | list[Any]]:
    """Each searched key with its interval, or its list of options, as Hydra's override grammar reads them."""
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return {override.get_key_element(): override.value() if override.is_interval_sweep()
            else list(override.sweep_iterator()) for override in PARSER.parse_overrides(params)}


def in_space(value: Any, allowed: IntervalSweep | list[Any]) -> bool:
    if isinstance(allowed, IntervalSweep):
        return allowed.start <= value <= allowed.end
    return value in allowed


def write_job(sweep_dir: Path, name: str, overrides: list[str], summary: dict | None = None) -> None:
    """A job folder as `train -m` leaves it: .hydra/overrides.yaml, and summary.json once the job has ended."""
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
    if summary is not None:
        (job_dir / "summary.json").write_text(json.dumps(summary))


def summary(best_value: float, monitor: str = "val_loss", stop_reason: str = "max_epochs") -> dict:
    return {"test": {"loss": round(best_value + 0.01, 4), "accuracy": 0.9}, "monitor": monitor,
            "best_value": best_value, "best_epoch": 3, "stop_reason": stop_reason, "epochs": 5, "steps": 55,
            "train_samples": 700, "train_seconds": 0.4, "device": "cpu", "num_parameters": 1000}


def write_sweep(sweep_dir: Path) -> Path:
    """Five jobs of `train -m data=moons optimizer=sgd,adam optimizer.lr=...`: three finished, one interrupted
    (with the lowest value: a partial run ranks after the finished ones), one without a summary."""
    write_job(sweep_dir, "0", ["data=moons", "optimizer=sgd", "optimizer.lr=0.001"], summary(0.30123456789))
    write_job(sweep_dir, "1", ["data=moons", "optimizer=sgd", "optimizer.lr=0.01"], summary(0.2))
    write_job(sweep_dir, "2", ["data=moons", "optimizer=adam", "optimizer.lr=0.001"],
              summary(0.1, stop_reason="interrupted"))
    write_job(sweep_dir, "3", ["data=moons", "optimizer=adam", "optimizer.lr=0.01"])
    write_job(sweep_dir, "10", ["data=moons", "optimizer=adam", "optimizer.lr=0.1"],
              summary(0.25, stop_reason="early_stopping"))
    return sweep_dir
