"""Loggers beyond the CSV files every run writes (metrics.csv per epoch, health.csv per gradient check).

logger=tensorboard: TensorBoard event files in <run dir>/tensorboard, read by `tensorboard --logdir outputs`.
logger=mlflow: an MLflow run per run (observe.mlflow_logger), read by `mlflow ui`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from trainer.training.observers import Observer

if TYPE_CHECKING:
    from trainer.observe.health import TensorHealth
    from trainer.training.engine import Engine


class TensorBoardLogger(Observer):
    """Per epoch the metrics.csv values; every `every_n_steps` steps the training loss, the learning rate and,
    with `histograms`, a histogram of every parameter tensor's weights and gradients; at every gradient health
    check each tensor's gradient norm and update-to-weight ratio. The x axis is the optimiser step throughout."""

    def __init__(self, log_dir: Path, every_n_steps: int = 50, histograms: bool = True):
        self.log_dir, self.every_n_steps, self.histograms = log_dir, every_n_steps, histograms
        self.writer = None

    def start(self, global_step: int) -> None:
        """Open the event files; a run resumed at `global_step` discards the events logged after it before the
        interruption, which it logs again."""
        from torch.utils.tensorboard import SummaryWriter  # a few seconds to import: only for this logger

        self.writer = SummaryWriter(str(self.log_dir), purge_step=global_step or None)

    def due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def log_step(self, step: int, loss: torch.Tensor, lr: float, model: nn.Module) -> None:
        """After optimiser step `step`: its loss and learning rate; weights and gradients as histograms."""
        self.writer.add_scalar("train/loss_step", loss.item(), step)
        self.writer.add_scalar("train/lr", lr, step)
        if self.histograms:
            for name, parameter in model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", parameter.detach().float(), step)
                if parameter.grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", parameter.grad.detach().float(), step)

    def log_epoch(self, step: int, row: dict[str, float]) -> None:
        """A metrics.csv row: train_loss, val_* and lr, against the step the epoch ended at."""
        for name, value in row.items():
            if name not in ("epoch", "step", "seconds"):
                self.writer.add_scalar(f"epoch/{name}", value, step)

    def log_health(self, report: list[TensorHealth]) -> None:
        if self.writer is None:  # a step outside any fit (trainer.inspect): no event file is open
            return
        for tensor in report:
            self.writer.add_scalar(f"grad_norm/{tensor.name}", tensor.grad_norm, tensor.step)
            self.writer.add_scalar(f"update_ratio/{tensor.name}", tensor.update_ratio, tensor.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def on_fit_start(self, engine: Engine) -> None:
        self.start(engine.global_step)

    def on_step_end(self, engine: Engine, loss: Optional[torch.Tensor]) -> None:
        # trainer.inspect's step is taken outside any fit, with no event file open: it is not logged.
        if loss is not None and self.writer is not None and self.due(engine.global_step):
            self.log_step(engine.global_step, loss, engine.lr, engine.model)

    def on_epoch_end(self, engine: Engine, row: dict[str, float]) -> None:
        self.log_epoch(engine.global_step, row)

    def on_fit_end(self, engine: Engine) -> None:
        self.close()


# logger=tensorboard's _target_ of 0.1.0 (trainer.moved_modules): Hydra's errors and `trust` name it by that path.
TensorBoardLogger.__module__ = "trainer.loggers"


MLFLOW = "trainer.observe.mlflow_logger.MlflowLogger"
"""logger=mlflow's _target_: the logger takes the run directory (its name, its files), not a folder of its own."""


def build_logger(logger_cfg: Optional[dict], run_dir: Path) -> Optional[Observer]:
    """The logger of the `logger` group's option: none for csv (the CSV files are always written)."""
    if not logger_cfg or "_target_" not in logger_cfg:
        return None
    from hydra.utils import instantiate

    if logger_cfg["_target_"] == MLFLOW:
        return instantiate(logger_cfg, run_dir=run_dir)
    return instantiate(logger_cfg, log_dir=run_dir / "tensorboard")
