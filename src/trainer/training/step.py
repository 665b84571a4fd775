"""One optimisation step, as the textbook has it: zero_grad, forward, loss, backward, (clip), step, (schedule).

Gradient accumulation, the precision and the non-finite policy are small named collaborators; everything that
watches a step (progress bar, gradient health, loggers) is an observer of the engine, not part of the step."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from trainer.config import TrainerConfig
from trainer.training.distributed import Processes
from trainer.training.losses import targets_for, weight_penalty
from trainer.training.nonfinite import NonFinitePolicy
from trainer.training.precision import Precision

Batch = tuple[torch.Tensor, torch.Tensor]
"""x: (B, *input_shape); y: (B,) class indices or (B, T) targets."""


class TrainingStep:
    """Calling it takes one optimisation step on the gradients of one or more batches."""

    def __init__(self, model: nn.Module, train_model: nn.Module, criterion: nn.Module,
                 optimizer: torch.optim.Optimizer, settings: TrainerConfig, precision: Precision,
                 nonfinite: NonFinitePolicy, processes: Processes = Processes(),
                 scheduler: Optional[LRScheduler | ReduceLROnPlateau] = None, scheduler_interval: Optional[str] = None):
        self.model, self.train_model = model, train_model
        """`model` holds the parameters; `train_model` is how the step calls it (compiled, DDP-wrapped)."""
        self.criterion, self.optimizer, self.settings = criterion, optimizer, settings
        self.precision, self.nonfinite, self.processes = precision, nonfinite, processes
        self.scheduler = scheduler if scheduler_interval == "step" else None
        """A schedule that steps with every optimisation step (cosine, warmup); others step with the epoch."""

    def __call__(self, micro_batches: list[Batch], step: int, epoch: int,
                 step_samples: Optional[int] = None) -> Optional[torch.Tensor]:
        """Step number `step` (counting from 1) of `epoch`, on `micro_batches` (trainer.accumulate_grad_batches of
        them). Returns the step's mean loss over its samples (without the L1/L2 penalty, so that it compares with
        val_loss), or None when on_nonfinite=skip left the step out. step_samples: the samples of the step over
        all processes (this process's, when there is one)."""
        self.optimizer.zero_grad(set_to_none=True)  # gradients accumulate in .grad unless cleared
        objective, loss = self.forward_backward(micro_batches, step_samples)
        if not self.nonfinite.allows_step(objective, step, epoch):
            return None
        self.precision.unscale_gradients(self.optimizer)
        self.clip_gradients()
        self.precision.step(self.optimizer)  # parameter -= lr * (the optimiser's reading of) .grad
        if self.scheduler is not None:
            self.scheduler.step()
        return loss

    def forward_backward(self, micro_batches: list[Batch],
                         step_samples: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward each batch, adding its gradients into .grad; returns the step's objective and
        loss (detached). Each batch's loss (a mean over its samples) is weighted by its share of the step's
        samples, so that the gradients add up to those of one batch of all of them; with several processes,
        DDP averages over the processes, so each weight is also multiplied by their number."""
        local_samples = sum(len(x) for x, _ in micro_batches)
        step_samples = step_samples or local_samples
        world_size = self.processes.world_size
        objective_sum = loss_sum = None
        for index, (x, y) in enumerate(micro_batches):
            weight = len(x) * world_size / step_samples  # 1 for a lone batch on a lone process
            last = index == len(micro_batches) - 1
            # DDP averages the gradients in backward: once per step, with the last batch, is enough.
            sync = contextlib.nullcontext() if last or not self.processes.distributed else self.train_model.no_sync()
            with sync:
                with self.precision.autocast():
                    output = self.train_model(x)  # (B, num_outputs)
                    loss = self.criterion(output.float(), targets_for(self.criterion, y))
                    objective = loss
                    if self.settings.l1 or self.settings.l2:
                        objective = loss + weight_penalty(self.model, self.settings.l1, self.settings.l2)
                    if weight != 1:
                        objective = objective * weight
                self.precision.backward(objective)  # d objective / d parameter, added into .grad
            if len(micro_batches) == 1 and world_size == 1:
                return objective.detach(), loss.detach()
            share = len(x) / local_samples  # of this process's samples: the loss reported is their mean
            objective_sum = objective.detach() if objective_sum is None else objective_sum + objective.detach()
            loss_sum = loss.detach() * share if loss_sum is None else loss_sum + loss.detach() * share
        return objective_sum, loss_sum

    def clip_gradients(self) -> None:
        """trainer.grad_clip: rescale the gradients to that norm at most, or clamp each to that value."""
        if self.settings.grad_clip is None:
            return
        if self.settings.grad_clip_algorithm == "norm":
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        else:
            nn.utils.clip_grad_value_(self.model.parameters(), self.settings.grad_clip)
