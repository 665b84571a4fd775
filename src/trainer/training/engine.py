"""The loop around the step: epochs of training steps, validation, early stopping, checkpoints, signals.

The step itself (forward, loss, backward, clip, step) is trainer.training.step; what watches the loop (metrics.csv,
gradient health, loggers, the progress bar) are the observers run.build hands in."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from trainer import __version__
from trainer.config import TrainerConfig
from trainer.data import Batcher
from trainer.training import distributed
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.training.distributed import Processes
from trainer.training.early_stopping import EarlyStopping
from trainer.training.metrics import split_metrics
from trainer.training.observers import Observer
from trainer.training.outputs import outputs_and_targets
from trainer.training.progress import EpochProgress, FitResult
from trainer.training.schedules import step_epoch_scheduler
from trainer.training.seeding import rng_states, set_rng_states
from trainer.training.step import Batch, TrainingStep
from trainer.training.stop_agreement import StopAgreement
from trainer.vocabulary import StopReason

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, step: TrainingStep, settings: TrainerConfig, device: torch.device, checkpoint_dir: Path,
                 early_stopping: EarlyStopping, observers: list[Observer], stop: StopAgreement,
                 eval_model: Optional[torch.nn.Module] = None,
                 scheduler: Optional[LRScheduler | ReduceLROnPlateau] = None, scheduler_interval: Optional[str] = None,
                 target_std: Optional[torch.Tensor] = None,
                 identity: Optional[dict[str, Any]] = None, processes: Processes = Processes()):
        self.step = step
        self.model, self.train_model, self.criterion = step.model, step.train_model, step.criterion
        """`model` is the plain module: its parameters and state_dict are the checkpoints'. `train_model` is how
        the step calls it: compiled (trainer.compile) and, with several processes, wrapped in DDP."""
        self.eval_model = eval_model if eval_model is not None else self.model
        """The model as evaluation calls it: compiled, never DDP-wrapped (evaluation averages no gradients)."""
        self.optimizer, self.precision, self.nonfinite = step.optimizer, step.precision, step.nonfinite
        self.scheduler, self.scheduler_interval = scheduler, scheduler_interval
        """Every schedule, for checkpoints; one with interval=epoch steps after each validation, here."""
        self.settings, self.device, self.processes = settings, device, processes
        self.checkpoint_dir, self.early_stopping, self.observers, self.stop = (checkpoint_dir, early_stopping,
                                                                               observers, stop)
        self.target_std = target_std
        """Regression: the train targets' standard deviation, so that errors are reported in the data's units."""
        self.identity = identity or {"config": {}, "data": None, "choices": None}
        """What every checkpoint says of the run: "config" (resolved), "data" (DataDescription.to_plain(), so that
        `predict` needs no data set), "choices" (the config group options, from which `evaluate` and `predict`
        take each `_target_`: never from the file)."""
        self.config = self.identity["config"]
        self.epoch, self.global_step = 0, 0
        """Epochs completed; optimiser steps taken (skipped ones included)."""
        self.train_batches: Optional[Batcher] = None
        """The training batches of the current fit, whose position checkpoints record."""
        self.starts = 0
        """How many times fit has started on this run: 1, and 1 more for each resume from a checkpoint a start
        saved (a start killed before its first save left nothing to count it by)."""
        self.seconds_trained = 0.0
        """Seconds spent in fit over the run's starts, the fit in progress left out: a resumed run's summary counts
        the time of every start, not only the last one's."""
        self._fit_started: Optional[float] = None
        """time.perf_counter() when the fit in progress began; None outside fit."""
        self.progress: Optional[EpochProgress] = None
        """The epoch in progress; set when it starts (or is resumed), read when it ends."""

    def fit(self, train: Batcher, val: Batcher) -> FitResult:
        """Train until max_epochs or early stopping; best.pt holds the weights of the best validation epoch."""
        self.train_batches = train
        stop_reason = StopReason.MAX_EPOCHS
        self.starts += 1
        self._fit_started = time.perf_counter()
        if self.early_stopping.should_stop:  # resumed from the checkpoint of an epoch that decided to stop
            log.info(self.early_stopping.message())
            stop_reason = StopReason.EARLY_STOPPING
        try:
            for observer in self.observers:
                observer.on_fit_start(self)
            with self.stop.requests:
                while self.epoch < self.settings.max_epochs and stop_reason is StopReason.MAX_EPOCHS:
                    stop_reason = self._fit_epoch(train, val)
        finally:
            for observer in self.observers:
                observer.on_fit_end(self)
            self.seconds_trained, self._fit_started = self.train_seconds(), None
        return FitResult(best_epoch=self.early_stopping.best_epoch, best_value=self.early_stopping.best,
                         stop_reason=stop_reason, epochs=self.epoch, train_seconds=self.seconds_trained,
                         starts=self.starts)

    def train_seconds(self) -> float:
        """Seconds spent in fit over every start of the run until now. An earlier start counts up to its last
        save: what it trained after that was lost, and trained again."""
        in_progress = time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0
        return self.seconds_trained + in_progress

    def _fit_epoch(self, train: Batcher, val: Batcher) -> StopReason:
        """Train one epoch (or the rest of a resumed one), validate, checkpoint; MAX_EPOCHS means go on."""
        monitor = self.early_stopping.monitor
        epoch_start = time.perf_counter()
        if self.stop.signal_received():  # came after the last epoch's last step, which was saved since
            if not self.settings.checkpoint.save_last:
                self._save_checkpoints(best=False, last=True)
            return self.stop.stopped_by_signal(self.epoch + 1, self.global_step, bool(self.settings.fast_dev_run))
        train_loss = self.train_epoch(train)
        stopped_part_way = self.stop.requests.received is not None and train.position != 0
        if self.nonfinite.diverged(self.global_step, self.epoch + 1, self.lr, check_weights=stopped_part_way):
            log.error(self.nonfinite.divergence)  # nothing non-finite goes into a checkpoint
            return StopReason.DIVERGED
        if stopped_part_way:
            self._save_checkpoints(best=False, last=True)
            return self.stop.stopped_by_signal(self.epoch + 1, self.global_step, bool(self.settings.fast_dev_run))
        # A signal after the epoch's last step is answered once the epoch is validated and saved, above.
        lr = self.progress.lr
        metrics = {f"val_{name}": value for name, value in self.evaluate(val).items()}
        step_epoch_scheduler(self.scheduler, self.scheduler_interval, metrics[monitor])
        self.epoch += 1
        row = {"epoch": self.epoch, "step": self.global_step, "lr": lr, "train_loss": train_loss, **metrics,
               "seconds": time.perf_counter() - epoch_start}
        for observer in self.observers:
            observer.on_epoch_end(self, row)
        log.info("epoch %d/%d  train_loss %.4f  %s  lr %.3g", self.epoch, self.settings.max_epochs, train_loss,
                 "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), lr)
        if not (math.isfinite(train_loss) and math.isfinite(metrics[monitor])):
            # Kept out of best.pt and last.pt: the checkpoints stay those of the last finite epoch.
            log.error("epoch %d: the loss diverged (train_loss %s, %s %s) at learning rate %.3g; stopping. "
                      "A lower optimizer.lr or trainer.grad_clip usually helps.", self.epoch, train_loss,
                      monitor, metrics[monitor], lr)
            return StopReason.DIVERGED
        improved = self.early_stopping.update(metrics[monitor], self.epoch)
        self._save_checkpoints(best=improved, last=self.settings.checkpoint.save_last)
        if self.early_stopping.should_stop:
            log.info(self.early_stopping.message())
            return StopReason.EARLY_STOPPING
        return StopReason.MAX_EPOCHS

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, batcher: Batcher) -> float:
        """One pass over the training batches (the rest of them, in an epoch resumed mid-way); returns the mean
        training loss. Stops early, mid-epoch, on divergence or a stop signal."""
        self.train_model.train()
        if batcher.position == 0 or self.progress is None:
            # Summed on the device: reading a loss with .item() would wait for the device at every step.
            self.progress = EpochProgress(loss_sum=torch.zeros((), device=self.device), seen=0, lr=self.lr)
        self.train_batches, every_n_steps = batcher, self.settings.checkpoint.every_n_steps
        for observer in self.observers:
            observer.on_epoch_start(self)
        micro_batches: list[Batch] = []
        for x, y in batcher:
            micro_batches.append((x, y))
            if len(micro_batches) < self.settings.accumulate_grad_batches and batcher.position < len(batcher):
                continue  # a step adds up the gradients of `accumulate` batches (fewer at the epoch's end)
            self.train_step(micro_batches, batcher.samples_in(batcher.position - len(micro_batches),
                                                              batcher.position))
            micro_batches = []
            if self.stop.within_the_epoch(self.global_step, diverged=self.nonfinite.divergence is not None):
                break  # divergence: read at a log step, or set by a step over on_nonfinite=skip's limit
            if every_n_steps and self.global_step % every_n_steps == 0 and batcher.position < len(batcher):
                if self.nonfinite.diverged(self.global_step, self.epoch + 1, self.lr, check_weights=True):
                    break  # (the epoch's end has its own save, after validation)
                self._save_checkpoints(best=False, last=True)
        for observer in self.observers:
            observer.on_epoch_steps_end(self)
        self.nonfinite.diverged(self.global_step, self.epoch + 1, self.lr)
        progress = self.progress
        # Every process has trained on its share of the samples: the epoch's loss is over all of them.
        totals = distributed.sum_over_ranks(progress.totals()).tolist()
        return totals[0] / max(totals[1], 1)

    def train_step(self, micro_batches: list[Batch], step_samples: Optional[int] = None) -> Optional[torch.Tensor]:
        """One optimisation step (trainer.training.step) on one or more batches, counted, added to the epoch's
        loss, and shown to the observers; returns its mean loss, or None when on_nonfinite=skip left it out."""
        for observer in self.observers:
            observer.on_step_start(self)
        loss = self.step(micro_batches, self.global_step + 1, self.epoch + 1, step_samples)
        self.global_step += 1
        if loss is not None and self.progress is not None:
            samples = sum(len(x) for x, _ in micro_batches)
            self.progress.loss_sum.add_(loss, alpha=samples)
            self.progress.seen += samples
        if self.global_step % self.settings.log_every_n_steps == 0:  # where the progress bar reads the loss: one sync
            self.nonfinite.diverged(self.global_step, self.epoch + 1, self.lr)
        for observer in self.observers:
            observer.on_step_end(self, loss)
        return loss

    @torch.inference_mode()
    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Loss and metrics of a whole split, in eval mode without autograd (so in larger batches): accuracy for
        classes (int64 y), MSE, RMSE and R^2 for values. With several processes each evaluates its share, and all
        compute the metrics from every share's outputs, so that they reach the same decisions."""
        self.train_model.eval()
        with self.precision.autocast():
            output, y = outputs_and_targets(self.eval_model, batches)
        # Every process's share: (N, num_outputs), (N,) or (N, T)
        return split_metrics(self.criterion, distributed.gathered(output), distributed.gathered(y), self.target_std)

    def test(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Metrics of the test split with the best weights (best.pt); empty if no epoch ended with finite losses."""
        if self.early_stopping.best_epoch is None:
            return {}
        distributed.wait_for_every_rank()  # until rank 0 has written best.pt
        if not (self.checkpoint_dir / "best.pt").exists():  # resumed from another folder's last.pt, with nothing left
            log.warning("no best.pt in %s (the run was resumed from another folder's checkpoint and trained no "
                        "epoch here): testing the weights it ended with", self.checkpoint_dir)
            return self.evaluate(batches)
        best = load_checkpoint(self.checkpoint_dir / "best.pt", map_location=self.device,
                               inside=self.checkpoint_dir)
        self.model.load_state_dict(best["model"])
        return self.evaluate(batches)

    def _save_checkpoints(self, best: bool, last: bool) -> None:
        """best.pt when the monitored metric improved, last.pt (keeping the one it replaces as a fallback): one
        state for both. Only rank 0 writes: every process holds the same weights, but each has summed the loss of
        its own share of the epoch's samples, so a distributed run's checkpoints also keep every process's sum
        ("epoch_progress_by_rank", gathered here: all processes save at the same steps)."""
        if not (best or last):
            return
        by_rank = None  # (world_size, 2): each process's loss sum and samples seen
        if self.processes.distributed and self.progress is not None:
            by_rank = distributed.gathered(self.progress.totals()[None]).cpu()
        if self.processes.is_main:
            state = self.state_dict()
            if by_rank is not None:
                state["epoch_progress_by_rank"] = by_rank
            if best:
                save_checkpoint(state, self.checkpoint_dir / "best.pt")
            if last:
                save_checkpoint(state, self.checkpoint_dir / "last.pt", keep_previous=True)

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds, as plain values and tensors."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "engine": {"epoch": self.epoch, "global_step": self.global_step,
                       "skipped_steps": self.nonfinite.skipped_steps, "train_seconds": self.train_seconds(),
                       "starts": self.starts},
            "epoch_progress": self.progress.state_dict() if self.progress is not None else None,
            "batcher": self.train_batches.state_dict() if self.train_batches is not None else None,
            "rng": rng_states(self.device),
            **self.identity,
            "version": __version__,
        }
        for observer in self.observers:
            state.update(observer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any], train: Optional[Batcher] = None) -> None:
        """Continue from a checkpoint's state: weights, optimiser, schedule, scaler, early stopping, counters,
        the epoch in progress, every RNG, the observers' records (metrics.csv is rewritten with them) and, given
        `train`, its position. Whatever can find the state wanting (a part missing or of another shape: KeyError,
        TypeError, ValueError, RuntimeError, IndexError) comes before the files are rewritten, so that a resume
        that fails leaves the run directory as it was."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["scaler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        counts = state["engine"]  # (checkpoint.load_checkpoint upgrades older formats, which lack some of these)
        self.epoch, self.global_step, self.starts = counts["epoch"], counts["global_step"], counts["starts"]
        self.nonfinite.skipped_steps, self.seconds_trained = counts["skipped_steps"], counts["train_seconds"]
        if not all(type(count) is int for count in (self.epoch, self.global_step, self.nonfinite.skipped_steps,
                                                    self.starts)):
            raise TypeError("its epoch, step and start counts are not integers")
        if type(self.seconds_trained) is not float:
            raise TypeError("its training time is not a number")
        if state["epoch_progress"] is not None:
            self.progress = EpochProgress(**state["epoch_progress"])
            if not isinstance(self.progress.loss_sum, torch.Tensor):
                raise TypeError("its epoch in progress has no loss sum tensor")
            self.progress.loss_sum = self.progress.loss_sum.to(self.device)
            by_rank = state.get("epoch_progress_by_rank")  # a distributed run's, per process (_save_checkpoints)
            if by_rank is not None:
                self.progress.take_share(by_rank, self.processes.rank, self.processes.world_size)
        set_rng_states(state["rng"], self.device)
        if train is not None and state["batcher"] is not None:
            train.load_state_dict(state["batcher"])
        for observer in self.observers:
            observer.load_state_dict(state)
        for observer in self.observers:
            observer.on_resume(self)
