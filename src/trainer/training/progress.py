"""How far training went: the epoch in progress (kept in mid-epoch checkpoints), and how a fit ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from trainer.vocabulary import StopReason


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

    def totals(self) -> torch.Tensor:
        """(2,): the loss sum and the samples seen, on the device."""
        return torch.stack([self.loss_sum, self.loss_sum.new_tensor(self.seen)])

    def take_share(self, by_rank: Any, rank: int, world_size: int) -> None:
        """Carry on this process's own part of a distributed run's epoch: `by_rank` (world_size, 2) holds each
        process's totals as the checkpoint was saved. With another number of processes, rank 0 carries on the sum
        of them all and the others start from nothing, so that the epoch's loss, summed over them, is the same."""
        if not (isinstance(by_rank, torch.Tensor) and by_rank.dim() == 2 and by_rank.shape[1] == 2):
            raise TypeError("its epoch in progress per process is not a table of loss sums and samples")
        own = (by_rank[rank] if len(by_rank) == world_size
               else by_rank.sum(dim=0) if rank == 0 else by_rank.new_zeros(2))
        self.loss_sum, self.seen = own[0].to(self.loss_sum.device, copy=True), int(own[1])
