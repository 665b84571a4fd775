"""What watches training without steering it: the hooks the engine calls, and the progress bar.

run.build makes the list (metrics log, gradient health, a logger, the progress bar); the engine calls each hook
on every observer in that order. The records they keep of the run go into its checkpoints, so that a resumed run
shows what an uninterrupted one would."""

from __future__ import annotations

import time
import typing
from typing import Any, Optional

import torch
from tqdm import tqdm

if typing.TYPE_CHECKING:
    from trainer.training.engine import Engine


class Observer:
    """Every hook does nothing unless overridden, as callbacks do in Lightning, Keras and HF."""

    def on_fit_start(self, engine: Engine) -> None:
        """Before the first epoch of this start (after a resume, the resumed epoch)."""

    def on_epoch_start(self, engine: Engine) -> None:
        """Before the epoch's first step (or the first step left, in an epoch resumed mid-way)."""

    def on_step_start(self, engine: Engine) -> None:
        """Before step engine.global_step + 1 changes anything."""

    def on_step_end(self, engine: Engine, loss: Optional[torch.Tensor]) -> None:
        """After step engine.global_step; `loss` (on the device, not read) is None for a step left out."""

    def on_epoch_steps_end(self, engine: Engine) -> None:
        """After the epoch's last step, or the step it stopped after (a signal, divergence): before it is validated,
        saved or reported."""

    def on_epoch_end(self, engine: Engine, row: dict[str, float]) -> None:
        """After the epoch was validated: its metrics.csv row (epoch, step, lr, train_loss, val_*, seconds)."""

    def on_fit_end(self, engine: Engine) -> None:
        """When fit returns or raises."""

    def on_run_end(self, engine: Engine, summary: dict[str, Any]) -> None:
        """Once the run's records are written (summary.json, curves.png), the test done or, for a run stopped by a
        signal, skipped: `summary` is summary.json's content. Rank 0's observers only."""

    def on_run_failed(self, engine: Engine) -> None:
        """The run ended with an exception rather than its records (a stop by a signal ends with on_run_end): a
        logger marks its run failed. Rank 0's observers only."""

    def state_dict(self) -> dict[str, Any]:
        """Entries this observer adds to every checkpoint (at its top level)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this observer's entries from a checkpoint, raising if they are wanting; write nothing yet."""

    def on_resume(self, engine: Engine) -> None:
        """Once every part of a checkpoint was taken: bring the observer's files in line with it."""


class ProgressBar(Observer):
    """The epoch's bar (tqdm, on a terminal, rank 0's): batches done, and every trainer.log_every_n_steps steps
    the epoch's mean loss, the learning rate and samples per second. Reading the loss waits for the device, so it
    is read only at those steps, and only when the bar is shown."""

    def __init__(self, log_every_n_steps: int, shown: bool = True):
        self.log_every_n_steps = log_every_n_steps
        self.shown = shown
        """False for the processes other than rank 0."""
        self.bar: Optional[tqdm] = None
        self._started, self._seen_at_start = 0.0, 0

    def on_epoch_start(self, engine: Engine) -> None:
        batches = engine.train_batches
        self.bar = tqdm(total=len(batches), initial=batches.position, desc=f"epoch {engine.epoch + 1}",
                        leave=False, disable=None if self.shown else True)  # None: shown on a terminal only
        self._started, self._seen_at_start = time.perf_counter(), engine.progress.seen

    def on_step_end(self, engine: Engine, loss: Optional[torch.Tensor]) -> None:
        if self.bar is None:  # a step outside an epoch (trainer.inspect)
            return
        self.bar.update(engine.train_batches.position - self.bar.n)
        if self.bar.disable or engine.global_step % self.log_every_n_steps or engine.nonfinite.divergence:
            return
        progress = engine.progress
        rate = (progress.seen - self._seen_at_start) / (time.perf_counter() - self._started)
        self.bar.set_postfix(loss=f"{(progress.loss_sum / max(progress.seen, 1)).item():.4f}",
                             lr=f"{engine.optimizer.param_groups[0]['lr']:.3g}", samples_per_s=f"{rate:.0f}")

    def on_epoch_steps_end(self, engine: Engine) -> None:
        self.on_fit_end(engine)  # gone before validation, and before a line about the epoch is logged under it

    def on_fit_end(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
