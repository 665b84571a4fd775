"""The nested sections of the `trainer` config (schema.TrainerConfig): early stopping, checkpoints, gradient health
and the learning-rate range test. Each refuses in its `__post_init__` a value that cannot work, naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trainer.config.errors import ConfigError, one_of
from trainer.vocabulary import METRICS, better


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val_loss"
    """Validation metric that picks the best epoch (best.pt) and decides early stopping."""
    mode: Optional[str] = None
    """min or max: whether a smaller or a larger value is better; null takes it from the metric."""
    patience: Optional[int] = 10
    """Epochs without improvement before the run stops; null never stops early."""
    min_delta: float = 0.0
    """Smallest change of the metric that counts as an improvement."""

    def __post_init__(self) -> None:
        one_of("early_stopping.monitor", self.monitor, METRICS)
        if self.mode is not None:
            one_of("early_stopping.mode", self.mode, ("min", "max"))
        if self.patience is not None and self.patience < 1:
            raise ConfigError("early_stopping.patience", self.patience, "an integer >= 1, or null")
        if not self.min_delta >= 0:  # also refuses nan
            raise ConfigError("early_stopping.min_delta", self.min_delta, "a number >= 0")

    @property
    def direction(self) -> str:
        """`mode`, or when it is null the metric's own: max for accuracy and R^2, min for losses and errors."""
        # Derived here rather than written into `mode` by __post_init__: Hydra builds the schema's defaults by
        # calling this class, and a filled-in mode would become the default for every monitor.
        return self.mode if self.mode is not None else better(self.monitor)


@dataclass
class CheckpointConfig:
    dir: str = "checkpoints"
    """Folder for best.pt and last.pt, relative to the run directory."""
    save_last: bool = True
    """Write last.pt at the end of every epoch (best.pt is always written: the test uses it). The last.pt it
    replaces is kept as last.previous.pt, which resume falls back to should last.pt be unreadable."""
    every_n_steps: Optional[int] = None
    """Also write last.pt every this many optimiser steps within an epoch, so that a killed run loses at most
    that many steps; null writes it at epoch ends only."""

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ConfigError("checkpoint.every_n_steps", self.every_n_steps, "an integer >= 1, or null")
        if self.every_n_steps is not None and not self.save_last:
            raise ConfigError("checkpoint.every_n_steps", self.every_n_steps,
                              "null when checkpoint.save_last is false (the steps' saves are last.pt)")


@dataclass
class HealthConfig:
    every_n_steps: Optional[int] = 100
    """Steps between gradient health checks (and the first step): per parameter tensor its gradient norm, weight
    norm and update-to-weight ratio, written to health.csv; null checks nothing."""
    vanishing_below: float = 1e-6
    """A gradient norm below this is vanishing: the layer barely learns. Warned once per tensor."""
    exploding_above: float = 1e3
    """A gradient norm above this, or not finite, is exploding. Warned once per tensor."""

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ConfigError("health.every_n_steps", self.every_n_steps, "an integer >= 1, or null")
        if not self.vanishing_below >= 0:
            raise ConfigError("health.vanishing_below", self.vanishing_below, "a number >= 0")
        if not self.exploding_above > self.vanishing_below:
            raise ConfigError("health.exploding_above", self.exploding_above,
                              f"a number > health.vanishing_below={self.vanishing_below}")


@dataclass
class LrFindConfig:
    min_lr: float = 1e-7
    """trainer.find_lr: the learning rate of the sweep's first step."""
    max_lr: float = 10.0
    """The learning rate of its last step, unless the loss diverges before."""
    num_steps: int = 100
    """Steps of the sweep, the learning rate growing by the same factor at each (an exponential sweep); the
    training batches are gone through again when there are fewer. The loss is smoothed over about 50 steps, as
    fastai and Lightning do with their 100: far fewer steps smooth over more decades and raise the suggestion."""
    stop_factor: float = 4.0
    """The sweep stops once the smoothed loss exceeds this many times its smallest value so far (or is not
    finite): the learning rate has made training diverge."""

    def __post_init__(self) -> None:
        if not self.min_lr > 0:
            raise ConfigError("lr_find.min_lr", self.min_lr, "a number > 0")
        if not self.max_lr > self.min_lr:
            raise ConfigError("lr_find.max_lr", self.max_lr, f"a number > lr_find.min_lr={self.min_lr}")
        if self.num_steps < 2:
            raise ConfigError("lr_find.num_steps", self.num_steps, "an integer >= 2")
        if not self.stop_factor > 1:
            raise ConfigError("lr_find.stop_factor", self.stop_factor, "a number > 1")
