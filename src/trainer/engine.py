"""The training loop: forward, loss, zero_grad, backward, step; validation, early stopping and checkpoints."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from tqdm import tqdm

from trainer import __version__, distributed
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.compilation import compiled
from trainer.config import TrainerConfig
from trainer.data import Batcher
from trainer.diagnostics import GradientHealth
from trainer.distributed import Processes
from trainer.early_stopping import EarlyStopping, StopReason
from trainer.interrupts import StopRequests
from trainer.loggers import TensorBoardLogger
from trainer.losses import targets_for, weight_penalty
from trainer.metrics import MetricsLog, split_metrics
from trainer.seeding import rng_states, set_rng_states

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_to(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` (one of AUTOCAST_DTYPES); for None no context at all (entering even a disabled one
    costs time at every step)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def outputs_and_targets(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs over all batches as float32 (N, num_outputs), and the targets, (N,) or (N, T)."""
    outputs, targets = [], []
    for x, y in batches:
        # A copy, also of float32 outputs: under CUDA graphs (trainer.compile_mode=reduce-overhead) the model's
        # output lives in memory that its next call overwrites.
        outputs.append(model(x).to(torch.float32, copy=True))  # (B, num_outputs)
        targets.append(y)
    return torch.cat(outputs), torch.cat(targets)


@dataclass
class FitResult:
    best_epoch: Optional[int]
    """None when no epoch ended with a finite loss."""
    best_value: Optional[float]
    stop_reason: StopReason
    epochs: int
    train_seconds: float
    """Over every start of the run (see Engine.train_seconds)."""
    starts: int
    """This one included (see Engine.starts)."""


@dataclass
class EpochProgress:
    """The epoch in progress, as far as it went: what its metrics.csv row needs, kept in mid-epoch checkpoints
    so that an epoch resumed half-way reports what it would have without the interruption."""

    loss_sum: torch.Tensor
    """Sum over the samples seen of their batch's loss; on the device, so that adding to it needs no sync."""
    seen: int
    """Samples trained on so far."""
    lr: float
    """The learning rate the epoch started with, its metrics.csv `lr`."""

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "seen": self.seen, "lr": self.lr}


class Engine:
    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 settings: TrainerConfig, device: torch.device, run_dir: Path,
                 scheduler: Optional[LRScheduler | ReduceLROnPlateau] = None, scheduler_interval: Optional[str] = None,
                 target_std: Optional[torch.Tensor] = None, config: Optional[dict[str, Any]] = None,
                 processes: Processes = Processes(), logger: Optional[TensorBoardLogger] = None,
                 data_description: Optional[dict[str, Any]] = None, choices: Optional[dict[str, str]] = None):
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        """`model` is the plain module: its parameters and state_dict are the checkpoints'."""
        self.processes = processes
        # The model as the steps call it: compiled (trainer.compile), and with several processes wrapped in DDP,
        # whose backward averages the gradients across them. Evaluation needs no averaging: the compiled model.
        self.eval_model = compiled(model, device, settings.compile_mode) if settings.compile else model
        self.train_model = self.eval_model
        if processes.distributed:
            self.train_model = DistributedDataParallel(self.eval_model,
                                                       device_ids=[device.index] if device.type == "cuda" else None)
        self.target_std = target_std
        """Regression: the train targets' standard deviation, so that errors are reported in the data's units."""
        self.scheduler, self.scheduler_interval = scheduler, scheduler_interval
        self.settings, self.device, self.config = settings, device, config or {}
        self.data_description = data_description
        """DataDescription.to_plain() of the data: checkpoints keep it so that `predict` needs no data set."""
        self.choices = choices
        """The config group options the run was composed from ({"model": "mlp", ...}): checkpoints keep them, and
        `evaluate` and `predict` take each `_target_` from those installed options, never from the file."""
        self.checkpoint_dir = run_dir / settings.checkpoint.dir
        self.metrics_log = MetricsLog(run_dir / "metrics.csv" if processes.is_main else None)
        self.health = None
        """Gradient health checks (trainer.health), by rank 0: every process has the same gradients after a step."""
        if processes.is_main and settings.health.every_n_steps is not None:
            self.health = GradientHealth(model, settings.health, run_dir / "health.csv")
        self.logger = logger
        """logger=tensorboard (rank 0's); None for CSV only."""
        stopping = settings.early_stopping
        self.early_stopping = EarlyStopping(stopping.monitor, stopping.direction, stopping.patience, stopping.min_delta)
        self.autocast_dtype = AUTOCAST_DTYPES[settings.precision]
        # float16 gradients underflow; the scaler multiplies the loss up before backward and divides it out after.
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "16")
        self.epoch = 0
        """Epochs completed."""
        self.global_step = 0
        """Optimiser steps taken."""
        self.train_batches: Optional[Batcher] = None
        """The training batches of the current fit, whose position checkpoints record."""
        self.skipped_steps = 0
        """on_nonfinite=skip: steps left out for a non-finite loss or gradient."""
        self.starts = 0
        """How many times fit has started on this run: 1, and 1 more for each resume from a checkpoint a start
        saved (a start killed before its first save left nothing to count it by)."""
        self.seconds_trained = 0.0
        """Seconds spent in fit over the run's starts, the fit in progress left out: a resumed run's summary counts
        the time of every start, not only the last one's."""
        self._fit_started: Optional[float] = None
        """time.perf_counter() when the fit in progress began; None outside fit."""
        self.divergence: Optional[str] = None
        """Why training stopped on non-finite values, once it has."""
        self.progress: Optional[EpochProgress] = None
        """The epoch in progress; set when it starts (or is resumed), read when it ends."""
        self.stop_requests = StopRequests()
        """Signals received during fit that ask it to save last.pt and stop."""
        # on_nonfinite=stop: (step, loss) of the steps not checked yet, the losses left on the device. They are
        # checked when the progress bar reads the loss and before anything is saved: appending to a list costs
        # neither a sync nor a device op, where a check on the device each step cost a tenth of a small step.
        self._unchecked_losses: list[tuple[int, torch.Tensor]] = []

    def fit(self, train: Batcher, val: Batcher) -> FitResult:
        """Train until max_epochs or early stopping; best.pt holds the weights of the best validation epoch."""
        self.train_batches = train
        stop_reason = StopReason.MAX_EPOCHS
        self.starts += 1
        self._fit_started = time.perf_counter()
        if self.early_stopping.should_stop:  # resumed from the checkpoint of an epoch that decided to stop
            log.info(self.early_stopping.message())
            stop_reason = StopReason.EARLY_STOPPING
        if self.logger is not None:
            self.logger.start(self.global_step)
        try:
            with self.stop_requests:
                while self.epoch < self.settings.max_epochs and stop_reason is StopReason.MAX_EPOCHS:
                    stop_reason = self._fit_epoch(train, val)
        finally:
            if self.logger is not None:
                self.logger.close()
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
        if self._stop_requested():  # came after the last epoch's last step: it was saved since
            return self._stopped_by_signal(save=not self.settings.checkpoint.save_last)
        train_loss = self.train_epoch(train)
        stopped_part_way = self.stop_requests.received is not None and train.position != 0
        if self._diverged(check_weights=stopped_part_way):  # nothing non-finite goes into a checkpoint
            log.error(self.divergence)
            return StopReason.DIVERGED
        if stopped_part_way:
            return self._stopped_by_signal(save=True)
        # A signal after the epoch's last step is answered once the epoch is validated and saved, above.
        lr = self.progress.lr
        metrics = {f"val_{name}": value for name, value in self.evaluate(val).items()}
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self._step_epoch_scheduler(metrics[monitor])
        self.epoch += 1
        row = {"epoch": self.epoch, "step": self.global_step, "lr": lr, "train_loss": train_loss, **metrics,
               "seconds": time.perf_counter() - epoch_start}
        self.metrics_log.append(row)
        if self.logger is not None:
            self.logger.log_epoch(self.global_step, row)
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

    def _stopped_by_signal(self, save: bool) -> StopReason:
        """A stop signal arrived: save last.pt where training is now (unless the epoch's end just did) and say how
        to go on."""
        if save:
            self._save_checkpoints(best=False, last=True)
        log.warning("stopped by %s at epoch %d, step %d; last.pt saved (train ... trainer.resume=auto in the same "
                    "run directory carries on)", self.stop_requests.received.name, self.epoch + 1, self.global_step)
        return StopReason.INTERRUPTED

    def train_epoch(self, batcher: Batcher) -> float:
        """One pass over the training batches (the rest of them, in an epoch resumed mid-way); returns the mean
        training loss. Stops early, mid-epoch, on divergence or a stop signal."""
        self.train_model.train()
        if batcher.position == 0 or self.progress is None:
            # Summed on the device: reading a loss with .item() would wait for the device at every step.
            self.progress = EpochProgress(loss_sum=torch.zeros((), device=self.device), seen=0,
                                          lr=self.optimizer.param_groups[0]["lr"])
        progress, every_n_steps = self.progress, self.settings.checkpoint.every_n_steps
        accumulate, log_every = self.settings.accumulate_grad_batches, self.settings.log_every_n_steps
        start, seen_at_start = time.perf_counter(), progress.seen
        micro_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        with tqdm(total=len(batcher), initial=batcher.position, desc=f"epoch {self.epoch + 1}", leave=False,
                  disable=None if self.processes.is_main else True) as bar:
            for x, y in batcher:
                bar.update()
                micro_batches.append((x, y))
                if len(micro_batches) < accumulate and batcher.position < len(batcher):
                    continue  # a step adds up the gradients of `accumulate` batches (fewer at the epoch's end)
                samples = sum(len(x) for x, _ in micro_batches)
                loss = self.train_step(micro_batches, batcher.samples_in(batcher.position - len(micro_batches),
                                                                         batcher.position))
                micro_batches = []
                if loss is not None:
                    progress.loss_sum.add_(loss.detach(), alpha=samples)
                    progress.seen += samples
                    if self.logger is not None and self.logger.due(self.global_step):
                        self.logger.log_step(self.global_step, loss, self.optimizer.param_groups[0]["lr"], self.model)
                if self.global_step % log_every == 0 and not self._diverged() and not bar.disable:
                    rate = (progress.seen - seen_at_start) / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{(progress.loss_sum / max(progress.seen, 1)).item():.4f}",
                                    lr=f"{self.optimizer.param_groups[0]['lr']:.3g}", samples_per_s=f"{rate:.0f}")
                if self._should_stop_within_the_epoch():
                    break  # divergence: read above, or set by a step over on_nonfinite=skip's limit
                if every_n_steps and self.global_step % every_n_steps == 0 and batcher.position < len(batcher):
                    if self._diverged(check_weights=True):  # (the epoch's end has its own save, after validation)
                        break
                    self._save_checkpoints(best=False, last=True)
        self._diverged()
        # Every process has trained on its share of the samples: the epoch's loss is over all of them.
        totals = distributed.sum_over_ranks(torch.stack([progress.loss_sum, progress.loss_sum.new_tensor(
            progress.seen)])).tolist()
        return totals[0] / max(totals[1], 1)

    def _should_stop_within_the_epoch(self) -> bool:
        """Diverged, or asked to stop by a signal. With several processes all must stop at the same step (each
        step waits for all of them), so they agree at every log_every_n_steps-th step, where the loss is read
        anyway; a lone process stops at the step the signal arrived in."""
        if self.processes.distributed and self.global_step % self.settings.log_every_n_steps != 0:
            return False
        return self.divergence is not None or self._stop_requested()

    def _stop_requested(self) -> bool:
        """Whether a stop signal arrived; with several processes, at any of them (all then stop, and name the
        same signal). The processes call this at the same steps."""
        received = self.stop_requests.received
        if self.processes.distributed:
            signal_number = distributed.max_over_ranks(received.value if received is not None else 0, self.device)
            if not signal_number:  # a signal that arrived during the exchange is kept, for the next one
                return False
            received = self.stop_requests.received = signal.Signals(signal_number)
        return received is not None

    def _diverged(self, check_weights: bool = False) -> bool:
        """on_nonfinite=stop: check the losses of the steps since the last check (one sync) and name the first
        non-finite one; with `check_weights`, before a save within the epoch, also check the weights (a gradient
        can be non-finite where the loss was not; at the epoch's end validation shows it)."""
        if self.divergence is not None:
            return True
        problem = None
        if self._unchecked_losses:
            steps, losses = zip(*self._unchecked_losses)
            self._unchecked_losses = []
            finite = torch.isfinite(torch.stack(losses)).tolist()
            if not all(finite):
                problem = f"step {steps[finite.index(False)]}: the loss is not finite"
        if problem is None and check_weights and not self._weights_finite():
            problem = f"step {self.global_step}: a weight is not finite (a gradient was, though the loss was not)"
        if problem is None and self.scaler.is_enabled() and self.scaler.get_scale() < 1:
            # float16: the scaler skips a step whose gradients overflow and halves its scale. Below 1 the gradients
            # are not scaled up any more: they are not finite in themselves, and no step would ever be taken.
            problem = (f"step {self.global_step}: the gradients are not finite, even unscaled (the GradScaler skipped "
                       f"their steps, down to a scale of {self.scaler.get_scale():.3g})")
        if distributed.any_rank(problem is not None, self.device) and problem is None:
            problem = f"by step {self.global_step}: another process's loss is not finite"  # all stop together
        if problem is not None:
            self.divergence = (f"epoch {self.epoch + 1}, {problem}, at learning rate "
                               f"{self.optimizer.param_groups[0]['lr']:.3g}; stopping (trainer.on_nonfinite="
                               f"{self.settings.on_nonfinite}). "
                               f"best.pt keeps the best finite epoch. A lower optimizer.lr or trainer.grad_clip "
                               f"usually helps.")
        return self.divergence is not None

    def _weights_finite(self) -> bool:
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])  # one per tensor
        return bool(torch.isfinite(torch.stack(norms).sum()))

    def train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
                   step_samples: Optional[int] = None) -> Optional[torch.Tensor]:
        """One optimisation step on the gradients of one or more batches (trainer.accumulate_grad_batches);
        returns the step's mean loss over its samples (without the L1/L2 penalty, so that it compares with
        val_loss), or None when on_nonfinite=skip left the step out.
        micro_batches: [(x, y)] with x: (B, *input_shape), y: (B,) class indices or (B, T) targets.
        step_samples: the samples of the step over all processes (this process's, when there is one)."""
        local_samples = sum(len(x) for x, _ in micro_batches)
        step_samples = step_samples or local_samples
        checked = self.health is not None and self.health.due(self.global_step + 1)
        weights_before = self.health.weights_before_step() if checked else None
        self.optimizer.zero_grad(set_to_none=True)  # gradients accumulate in .grad unless cleared
        objective, loss = self._accumulate_gradients(micro_batches, step_samples, local_samples)
        stepped = True
        if self.settings.on_nonfinite == "stop":  # steps are named counting from 1, as global_step counts
            self._unchecked_losses.append((self.global_step + 1, objective))
        else:
            stepped = self._finite_or_skipped(objective)
        if stepped and self.scaler.is_enabled():
            # float16: the loss was scaled up before backward; the gradients are scaled back down before the
            # step. The scaler itself skips steps whose gradients overflowed, and lowers the scale.
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients()
            scale = self.scaler.get_scale() if weights_before is not None else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if scale is not None and self.scaler.get_scale() < scale:
                weights_before = None  # the scaler found an overflow and skipped the step: nothing to judge
        elif stepped:
            self._clip_gradients()
            self.optimizer.step()  # parameter -= lr * (the optimiser's reading of) .grad
        if stepped and self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        if weights_before is not None:
            report = self.health.check(self.global_step, weights_before)
            if self.logger is not None:
                self.logger.log_health(report)
        return loss if stepped else None

    def _accumulate_gradients(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], step_samples: int,
                              local_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward each batch, adding its gradients into .grad; returns the step's objective and
        loss (detached). Each batch's loss (a mean over its samples) is weighted by its share of the step's
        samples, so that the gradients add up to those of one batch of all of them; with several processes,
        DDP averages over the processes, so each weight is also multiplied by their number."""
        world_size = self.processes.world_size
        objective_sum = loss_sum = None
        for index, (x, y) in enumerate(micro_batches):
            weight = len(x) * world_size / step_samples  # 1 for a lone batch on a lone process
            last = index == len(micro_batches) - 1
            # DDP averages the gradients in backward: once per step, with the last batch, is enough.
            sync = contextlib.nullcontext() if last or not self.processes.distributed else self.train_model.no_sync()
            with sync:
                with self.autocast():
                    output = self.train_model(x)  # (B, num_outputs)
                    loss = self.criterion(output.float(), targets_for(self.criterion, y))
                    objective = loss
                    if self.settings.l1 or self.settings.l2:
                        objective = loss + weight_penalty(self.model, self.settings.l1, self.settings.l2)
                    if weight != 1:
                        objective = objective * weight
                self.scaler.scale(objective).backward()  # d objective / d parameter, added into .grad
            if len(micro_batches) == 1 and world_size == 1:
                return objective.detach(), loss.detach()
            share = len(x) / local_samples  # of this process's samples: the loss reported is their mean
            objective_sum = objective.detach() if objective_sum is None else objective_sum + objective.detach()
            loss_sum = loss.detach() * share if loss_sum is None else loss_sum + loss.detach() * share
        return objective_sum, loss_sum

    def _finite_or_skipped(self, objective: torch.Tensor) -> bool:
        """on_nonfinite=skip: whether the step may go on. It must decide before optimizer.step, so it checks the
        loss and every gradient now and reads the answer (one sync per step); a non-finite step is left out. At
        precision 16 the loss alone decides: the gradients are still scaled up here, and overflow now and then by
        design, which the scaler answers itself (it skips that step and lowers the scale)."""
        finite = torch.isfinite(objective.detach())
        if not self.scaler.is_enabled():
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            grad_norms = torch.stack(torch._foreach_norm(grads)) if grads else objective.new_zeros(1)  # one per tensor
            finite = finite & torch.isfinite(grad_norms.sum())
        if finite.item():
            return True
        self.skipped_steps += 1
        log.warning("epoch %d, step %d: the loss or a gradient is not finite; step skipped (%d of at most %d)",
                    self.epoch + 1, self.global_step + 1, self.skipped_steps, self.settings.max_skipped)
        if self.skipped_steps > self.settings.max_skipped:
            self.divergence = (f"epoch {self.epoch + 1}, step {self.global_step + 1}: {self.skipped_steps} steps "
                               f"skipped for non-finite values, more than trainer.max_skipped="
                               f"{self.settings.max_skipped}; stopping. A lower optimizer.lr or "
                               f"trainer.grad_clip usually helps.")
        return False

    def _clip_gradients(self) -> None:
        if self.settings.grad_clip is None:
            return
        if self.settings.grad_clip_algorithm == "norm":
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        else:
            nn.utils.clip_grad_value_(self.model.parameters(), self.settings.grad_clip)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the precision's float type; at 32 no context at all (entering even a disabled one costs
        time at every step)."""
        return autocast_to(self.device, self.autocast_dtype)

    @torch.inference_mode()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Loss and metrics of a whole split, in eval mode without autograd (so in larger batches): accuracy for
        classes (int64 y), MSE, RMSE and R^2 for values. With several processes each evaluates its share, and all
        compute the metrics from every share's outputs, so that they reach the same decisions."""
        self.train_model.eval()
        with self.autocast():
            output, y = outputs_and_targets(self.eval_model, batches)
        # Every process's share: (N, num_outputs), (N,) or (N, T)
        return split_metrics(self.criterion, distributed.gathered(output), distributed.gathered(y), self.target_std)

    def test(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
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
        state for both. Only rank 0 writes: every process holds the same weights."""
        if (best or last) and self.processes.is_main:
            state = self.state_dict()
            if best:
                save_checkpoint(state, self.checkpoint_dir / "best.pt")
            if last:
                save_checkpoint(state, self.checkpoint_dir / "last.pt", keep_previous=True)

    def _step_epoch_scheduler(self, monitored: float) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds, as plain values and tensors."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "engine": {"epoch": self.epoch, "global_step": self.global_step, "skipped_steps": self.skipped_steps,
                       "train_seconds": self.train_seconds(), "starts": self.starts},
            "epoch_progress": self.progress.state_dict() if self.progress is not None else None,
            "batcher": self.train_batches.state_dict() if self.train_batches is not None else None,
            "rng": rng_states(self.device),
            "metrics": self.metrics_log.rows,
            "config": self.config,
            "data": self.data_description,
            "choices": self.choices,
            "version": __version__,
        }

    def load_state_dict(self, state: dict[str, Any], train: Optional[Batcher] = None) -> None:
        """Continue from a checkpoint's state: weights, optimiser, schedule, scaler, early stopping, counters,
        the epoch in progress, the metrics so far (metrics.csv is rewritten with them), every RNG and, given
        `train`, its position. Whatever can find the state wanting (a part missing or of another shape: KeyError,
        TypeError, ValueError, RuntimeError, IndexError) comes before the files are rewritten, so that a resume
        that fails leaves the run directory as it was."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.global_step = state["engine"]["epoch"], state["engine"]["global_step"]
        # (checkpoint.load_checkpoint upgrades older formats, which lack some of these)
        self.skipped_steps, self.starts = state["engine"]["skipped_steps"], state["engine"]["starts"]
        self.seconds_trained = state["engine"]["train_seconds"]
        if not all(type(count) is int for count in (self.epoch, self.global_step, self.skipped_steps, self.starts)):
            raise TypeError("its epoch, step and start counts are not integers")
        if type(self.seconds_trained) is not float:
            raise TypeError("its training time is not a number")
        if state["epoch_progress"] is not None:
            self.progress = EpochProgress(**state["epoch_progress"])
            if not isinstance(self.progress.loss_sum, torch.Tensor):
                raise TypeError("its epoch in progress has no loss sum tensor")
            self.progress.loss_sum = self.progress.loss_sum.to(self.device)
        set_rng_states(state["rng"], self.device)
        if train is not None and state["batcher"] is not None:
            train.load_state_dict(state["batcher"])
        rows = state["metrics"]
        if not (isinstance(rows, list) and all(isinstance(row, dict) and row.keys() == rows[0].keys()
                                               for row in rows)):
            raise ValueError("its metrics are not the rows of one table")
        if self.health is not None:  # (reads health.csv whole before it writes)
            self.health.forget_after(self.global_step)
        self.metrics_log.restore(rows)
