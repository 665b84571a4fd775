"""trainer.find_lr: the learning-rate range test (Smith 2015, "Cyclical learning rates for training neural networks";
fastai's lr_find, Lightning's Tuner.lr_find).

From a learning rate far too small to move anything, each training step multiplies it by the same factor, up to
one so large that training diverges; the loss against the learning rate shows where training is fastest. The
steps are the run's own TrainingStep, so penalties, clipping, precision and the optimiser's options act as they
will in training. Every piece of state the steps change (weights, optimiser, schedule, gradient scaler, the
batches' position, the random numbers) is put back afterwards.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from trainer.config import LrFindConfig
from trainer.data import Batcher
from trainer.training import distributed
from trainer.training.engine import Engine
from trainer.training.seeding import rng_states, set_rng_states
from trainer.training.step import Batch

SMOOTHING = 0.98
"""The loss is smoothed by an exponential moving average with this weight on the past (fastai's and Lightning's),
debiased as Adam's moments are: one batch's loss is too noisy to compare learning rates by."""
SKIPPED_AT_START = 10
"""A minimum of the smoothed loss within the sweep's first steps gives no suggestion: the loss only rose, and the
sweep should start lower."""
BELOW_THE_MINIMUM = 10.0
"""The suggestion is the learning rate of the smoothed loss's minimum divided by this (fastai's lr_min)."""


@dataclass
class LrSweep:
    """The steps the sweep took: the learning rate of each, its loss and the smoothed loss."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged: bool
    """Whether the sweep stopped because the smoothed loss exceeded stop_factor times its minimum (or a loss was
    not finite), rather than at max_lr."""

    @property
    def lowest(self) -> Optional[int]:
        """The step (from 0) of the smoothed loss's minimum; None when it is in the first SKIPPED_AT_START."""
        finite = [i for i, value in enumerate(self.smoothed) if math.isfinite(value)]
        lowest = min(finite, key=lambda i: self.smoothed[i], default=None)
        return lowest if lowest is not None and lowest >= SKIPPED_AT_START else None

    @property
    def suggestion(self) -> Optional[float]:
        """The learning rate of the smoothed loss's minimum over BELOW_THE_MINIMUM: at the minimum the loss is
        about to rise, and a tenth of it still falls fast. (The steepest descent of the smoothed loss, the other
        usual rule, rests on a derivative of noisy losses: on moons it picked a dip after a spike where the loss
        had long stopped falling.) None when there is no minimum to go by."""
        return None if self.lowest is None else self.lrs[self.lowest] / BELOW_THE_MINIMUM

    def rows(self) -> list[dict[str, float]]:
        """lr_find.csv's rows: step (from 1), lr, loss, smoothed_loss."""
        return [{"step": step, "lr": lr, "loss": loss, "smoothed_loss": smoothed}
                for step, (lr, loss, smoothed) in enumerate(zip(self.lrs, self.losses, self.smoothed), start=1)]


def sweep_lrs(settings: LrFindConfig) -> list[float]:
    """num_steps learning rates from min_lr to max_lr, each the one before times the same factor."""
    return np.geomspace(settings.min_lr, settings.max_lr, settings.num_steps).tolist()


def find_lr(engine: Engine, batches: Batcher) -> LrSweep:
    """Train engine's model on `batches` (round again as often as needed) at each learning rate of the sweep,
    one step each, until the loss diverges or max_lr is reached; then put every state the steps changed back."""
    settings = engine.settings
    saved = _State.of(engine, batches)
    lrs, losses, smoothed = [], [], []
    average, lowest, diverged = 0.0, math.inf, False
    engine.train_model.train()
    steps = _steps(batches, settings.accumulate_grad_batches)
    try:
        for index, lr in enumerate(sweep_lrs(settings.lr_find)):
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
            micro_batches, step_samples = next(steps)
            loss = engine.step(micro_batches, index + 1, 1, step_samples)
            if loss is None:  # on_nonfinite=skip left the step out: its loss was not finite
                loss = torch.tensor(math.inf, device=engine.device)
            # One read per step (the decision to go on needs it), averaged over the processes so that all agree.
            value = distributed.sum_over_ranks(loss.detach().float().clone()).item() / engine.processes.world_size
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            lrs.append(lr)
            losses.append(value)
            smoothed.append(average / (1 - SMOOTHING ** (index + 1)))
            lowest = min(lowest, smoothed[-1])
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > settings.lr_find.stop_factor * lowest:
                diverged = True
                break
    finally:
        saved.put_back(engine, batches)
    return LrSweep(lrs, losses, smoothed, diverged)


def _steps(batches: Batcher, accumulate: int) -> Iterator[tuple[list[Batch], int]]:
    """The micro-batches of each step and their samples, as Engine.train_epoch collects them, epoch after epoch."""
    while True:
        micro_batches: list[Batch] = []
        for x, y in batches:
            micro_batches.append((x, y))
            if len(micro_batches) < accumulate and batches.position < len(batches):
                continue
            yield micro_batches, batches.samples_in(batches.position - len(micro_batches), batches.position)
            micro_batches = []


@dataclass
class _State:
    """What the sweep's steps change, as it was before them."""

    model: dict
    optimizer: dict
    scheduler: Optional[dict]
    scaler: dict
    batches: dict
    rng: dict
    skipped_steps: int

    @classmethod
    def of(cls, engine: Engine, batches: Batcher) -> _State:
        scheduler = engine.scheduler.state_dict() if engine.scheduler is not None else None
        return cls(copy.deepcopy(engine.model.state_dict()), copy.deepcopy(engine.optimizer.state_dict()),
                   copy.deepcopy(scheduler), copy.deepcopy(engine.precision.state_dict()), batches.state_dict(),
                   rng_states(engine.device), engine.nonfinite.skipped_steps)

    def put_back(self, engine: Engine, batches: Batcher) -> None:
        engine.model.load_state_dict(self.model)
        engine.optimizer.load_state_dict(self.optimizer)  # its learning rates too
        if engine.scheduler is not None:
            engine.scheduler.load_state_dict(self.scheduler)
        engine.precision.load_state_dict(self.scaler)
        batches.load_state_dict(self.batches)
        set_rng_states(self.rng, engine.device)
        engine.optimizer.zero_grad(set_to_none=True)
        engine.nonfinite.start_over(self.skipped_steps)  # the sweep's diverging steps are not the run's
