"""Early stopping: watch one validation metric, remember the best epoch, stop after `patience` epochs without
an improvement of more than `min_delta`."""

from __future__ import annotations

import math
from typing import Any, Optional


class EarlyStopping:
    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: Optional[int] = 10,
                 min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.wait = 0
        """Epochs since the last improvement."""

    def improves(self, value: float) -> bool:
        """True if `value` beats the best so far by more than min_delta; nan and inf never do."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record the metric of `epoch`; return True if it is the new best."""
        if self.improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.wait >= self.patience

    def message(self) -> str:
        return (f"early stopping: {self.monitor} did not improve by more than {self.min_delta} for {self.wait} "
                f"epochs; best {self.best:.6g} at epoch {self.best_epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
