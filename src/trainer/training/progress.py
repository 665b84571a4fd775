"""How far training went: the epoch in progress (kept in mid-epoch checkpoints), and how a fit ended and why."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import Any, Optional

if typing.TYPE_CHECKING:
    import torch


class StopReason(str, enum.Enum):
    """Why a run ended."""

    MAX_EPOCHS = "max_epochs"
    EARLY_STOPPING = "early_stopping"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    """A stop signal (SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C): last.pt holds where training was."""


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
