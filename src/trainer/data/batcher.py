"""Batches as index slices of tensors that already live on the training device.

Each epoch is one seeded `randperm` on the device; a batch is `x[perm[i:i+B]]`. No per-sample Python, no
worker processes, no host-to-device copy per step. The permutation of epoch e depends only on (seed, e), and
the batcher remembers how far into the epoch it is, so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

from typing import Iterator

import torch


class Batcher:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0
        self.position = 0
        """Batches of the current epoch already served."""

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of an epoch: a permutation seeded by (seed, epoch), made on the data's device."""
        n, device = len(self.x), self.x.device
        if not self.shuffle:
            return torch.arange(n, device=device)
        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=generator, device=device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of the current epoch; when it is exhausted the batcher moves on to the next epoch."""
        order = self.order(self.epoch)
        while self.position < len(self):
            index = order[self.position * self.batch_size:(self.position + 1) * self.batch_size]
            self.position += 1
            yield self.x[index], self.y[index]
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
