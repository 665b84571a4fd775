"""Learning-rate schedules: torch's own classes, built from the `scheduler` config group.

A schedule config is a partial `_target_` plus `interval`: `step` schedules advance after every optimiser step,
`epoch` schedules after every validation. A factory that takes `total_steps` receives the run's number of
optimiser steps, so cosine annealing spans the whole run whatever the data size; one that takes `mode` receives
the monitored metric's (min or max), so a plateau is judged the way early stopping judges it.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, ReduceLROnPlateau, SequentialLR

from trainer.training.deferred_calls import deferred_call


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  eta_min: float = 0.0) -> LRScheduler:
    """Linear warm-up from lr/warmup_steps to lr, then cosine annealing to eta_min at the last step."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


# scheduler=cosine's _target_ of 0.1.0 (trainer.moved_modules): Hydra's errors and `trust` name it by that path.
warmup_cosine.__module__ = "trainer.schedules"


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    mode: str) -> tuple[Optional[LRScheduler], Optional[str]]:
    """The scheduler and its interval ('step' or 'epoch'); (None, None) for `scheduler=none`."""
    if "_target_" not in cfg:
        return None, None
    factory = deferred_call(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "interval"]), "scheduler")
    accepted = inspect.signature(factory).parameters
    runtime = {k: v for k, v in {"total_steps": total_steps, "mode": mode}.items() if k in accepted and k not in cfg}
    return factory(optimizer, **runtime), cfg.interval


def step_epoch_scheduler(scheduler: Optional[LRScheduler | ReduceLROnPlateau], interval: Optional[str],
                         monitored: float) -> None:
    """After each validation, a schedule of interval=epoch takes its step; ReduceLROnPlateau reads the monitored
    metric. (A schedule of interval=step takes its steps with the optimiser's.)"""
    if scheduler is None or interval != "epoch":
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()
