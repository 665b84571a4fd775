"""Batches as index slices of tensors that already live on the training device.

Each epoch is one seeded `randperm` on the device; a batch is `x[perm[i:i+B]]`, then augmented and normalised as
one tensor op each. No per-sample Python, no worker processes, no host-to-device copy per step. The permutation
of epoch e depends only on (seed, e), and the augmentation of a batch only on (seed, e, batch), and the batcher
remembers how far into the epoch it is, so a resumed run sees exactly the batches it would have.

`LoaderBatcher` serves the same batches from host memory through a `DataLoader` (worker processes, pinned
memory), for sets too large for the device.

With several processes (torchrun), every process makes the same permutation and takes every world_size-th sample
of each batch: a step over all of them trains on exactly the batch one process would have, so data.batch_size is
the global batch. Evaluation batches are shared out the same way.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from trainer.data.transforms import Augment, Normalize


class Batcher:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, normalize: Optional[Normalize] = None,
                 augment: Optional[Augment] = None, device: Optional[torch.device] = None, rank: int = 0,
                 world_size: int = 1, memory_format: torch.memory_format = torch.contiguous_format):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.device = device or x.device
        """Where batches are served; x and y live there too, except in a LoaderBatcher."""
        self.normalize = normalize.to(self.device) if normalize is not None else None
        self.augment = augment if augment is not None and augment.enabled else None
        self.rank, self.world_size = rank, world_size
        """This process's place among the processes of a distributed run: it serves its share of each batch."""
        self.memory_format = memory_format
        """channels_last serves image batches (B, C, H, W) in (B, H, W, C) memory (trainer.channels_last)."""
        self.epoch = 0
        self.position = 0
        """Batches of the current epoch already served."""

    def __len__(self) -> int:
        """Batches per epoch. A last training batch too small to give every process a sample is left out: each
        process must take each step."""
        full, rest = divmod(len(self.x), self.batch_size)
        return full if rest and (self.drop_last or (self.shuffle and rest < self.world_size)) else full + (rest > 0)

    def samples_in(self, first: int, stop: int) -> int:
        """The samples of batches first..stop-1 of an epoch, over all processes."""
        return min(stop * self.batch_size, len(self.x)) - first * self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of an epoch: a permutation seeded by (seed, epoch), made where the data lives."""
        n, device = len(self.x), self.x.device
        if not self.shuffle:
            return torch.arange(n, device=device)
        generator = torch.Generator(device=device).manual_seed(_mix(self.seed, epoch))
        return torch.randperm(n, generator=generator, device=device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of the current epoch; when it is exhausted the batcher moves on to the next epoch."""
        order = self.order(self.epoch)
        indices = (order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world_size]
                   for b in range(self.position, len(self)))
        for x, y in self._gather(index for index in indices if len(index)):  # (an evaluation share may be empty)
            if self.augment is not None:
                place = (self.seed, self.epoch, self.position) + ((self.rank,) if self.world_size > 1 else ())
                generator = torch.Generator(device=self.device).manual_seed(_mix(*place))
                x = self.augment(x, generator)
            if self.normalize is not None:
                x = self.normalize(x)
            if self.memory_format is not torch.contiguous_format:
                x = x.contiguous(memory_format=self.memory_format)
            self.position += 1
            yield x, y
        self.epoch += 1
        self.position = 0

    def _gather(self, indices: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The raw samples of each index batch, on the device."""
        for index in indices:  # index_select: a fraction of the cost of x[index]'s general indexing, per batch
            yield self.x.index_select(0, index), self.y.index_select(0, index)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


class LoaderBatcher(Batcher):
    """The same batches as Batcher, gathered in host memory by `num_workers` DataLoader processes, copied to the
    device (from pinned memory, without blocking, with `pin_memory`), then augmented and normalised there."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, device: torch.device,
                 num_workers: int = 2, pin_memory: bool = True,
                 worker_init_fn: Optional[Callable[[int], None]] = None, **options):
        super().__init__(x.cpu(), y.cpu(), batch_size, device=device, **options)
        self.num_workers = num_workers
        self.pin_memory = pin_memory and device.type == "cuda"
        self.worker_init_fn = worker_init_fn
        """Run in each worker as it starts: `train` makes its workers ignore the stop signals, which are the main
        process's to answer (it saves, then shuts the workers down), also when they reach the whole process group,
        as Slurm's and a terminal's do."""

    def _gather(self, indices: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The DataLoader draws its workers' base seed from `generator`, by default torch's global one, which
        # dropout also draws from: a generator of its own keeps a resumed run's random numbers where they were.
        loader = DataLoader(_Rows(self.x, self.y), batch_sampler=[index.tolist() for index in indices],
                            collate_fn=_as_is, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch)),
                            worker_init_fn=self.worker_init_fn)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Rows(torch.utils.data.Dataset):
    """Samples by index; `__getitems__` takes a whole batch of indices in one tensor op."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor(indices)
        return self.x.index_select(0, index), self.y.index_select(0, index)


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate function: `__getitems__` already made the batch (module level, so workers can pickle it)."""
    return batch


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers; hashing a tuple of ints is the same in every Python process."""
    return hash(numbers) & (2**63 - 1)
