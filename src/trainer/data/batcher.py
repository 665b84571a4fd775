"""Batches as index slices of tensors that already live on the training device.

Each epoch is one seeded `randperm` on the device; a batch is `x[perm[i:i+B]]`, then augmented and normalised as
one tensor op each. No per-sample Python, no worker processes, no host-to-device copy per step. The permutation
of epoch e depends only on (seed, e), and the augmentation of a batch only on (seed, e, batch), and the batcher
remembers how far into the epoch it is, so a resumed run sees exactly the batches it would have.

`LoaderBatcher` serves the same batches from host memory through a `DataLoader` (worker processes, pinned
memory), for sets too large for the device, and from a memory-mapped file (`RowsOf` a `np.memmap`) for sets too
large for host memory.

With several processes (torchrun), every process makes the same permutation and takes every world_size-th sample
of each batch: a step over all of them trains on exactly the batch one process would have, so data.batch_size is
the global batch. Evaluation batches are shared out the same way.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainer.data.mapped_rows import RowsOf
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
        self.limit: Optional[int] = None
        """At most this many batches per epoch, the first of each epoch's order (trainer.limit_*_batches,
        fast_dev_run, overfit_batches: see split_batchers.limit_batches); None: all of them. An epoch ends after
        them, so the next begins with a new order, and a resumed run goes on at its position as usual."""

    def __len__(self) -> int:
        """Batches per epoch. A last training batch too small to give every process a sample is left out: each
        process must take each step."""
        full, rest = divmod(len(self.x), self.batch_size)
        every = full if rest and (self.drop_last or (self.shuffle and rest < self.world_size)) else full + (rest > 0)
        return every if self.limit is None else min(every, self.limit)

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

    def close(self) -> None:
        """Let go of what serving batches holds besides the data: nothing here (LoaderBatcher's workers)."""


class LoaderBatcher(Batcher):
    """The same batches as Batcher, gathered in host memory by `num_workers` DataLoader processes, copied to the
    device (from pinned memory, without blocking, with `pin_memory`), then augmented and normalised there.

    One DataLoader serves every pass, and its workers live from the first pass to `close` (or the end of the
    process): an epoch, or an evaluation, starts without starting processes. Its batch sampler hands out the index
    batches of the pass in progress, slices of the epoch's order on the host, so each epoch keeps its own seeded
    order and a resumed epoch its remaining batches. `x` may be a numpy array or `RowsOf` one, typically a
    `np.memmap` of a set larger than memory: it is never copied whole, and each worker reads the rows of its
    batches from the file."""

    def __init__(self, x: torch.Tensor | np.ndarray | RowsOf, y: torch.Tensor, batch_size: int, *,
                 device: torch.device, num_workers: int = 2, pin_memory: bool = True,
                 worker_init_fn: Optional[Callable[[int], None]] = None, **options):
        x = x.cpu() if isinstance(x, torch.Tensor) else x if isinstance(x, RowsOf) else RowsOf(x)
        super().__init__(x, y.cpu(), batch_size, device=device, **options)
        self.num_workers = num_workers
        self.pin_memory = pin_memory and device.type == "cuda"
        self.worker_init_fn = worker_init_fn
        """Run in each worker as it starts: `train` makes its workers ignore the stop signals, which are the main
        process's to answer (it saves, then shuts the workers down), also when they reach the whole process group,
        as Slurm's and a terminal's do."""
        self._pass = _PassBatches()
        self._loader: Optional[DataLoader] = None
        self._workers: Optional[weakref.finalize] = None
        """Ends the loader's workers, once."""

    def order(self, epoch: int) -> np.ndarray:
        """Batcher's order of the epoch, as a numpy array on the host: the index batches are numpy slices of it,
        read by the host once per pass rather than once per batch, and sent to the workers as they are."""
        return super().order(epoch).numpy()

    def _gather(self, indices: Iterable[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._pass.batches = indices  # read by the loader's sampler, in this process, as workers take batches
        for x, y in self._data_loader():  # a pass left part-way is drained here, when the next one starts
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            # The DataLoader draws its workers' base seed from `generator`, by default torch's global one, which
            # dropout also draws from: a generator of its own keeps a resumed run's random numbers where they
            # were. (With persistent workers the seed is drawn once; the workers draw no random numbers.)
            self._loader = DataLoader(_Samples(self.x, self.y), batch_sampler=self._pass, collate_fn=_as_is,
                                      num_workers=self.num_workers, pin_memory=self.pin_memory,
                                      persistent_workers=self.num_workers > 0, worker_init_fn=self.worker_init_fn,
                                      generator=torch.Generator().manual_seed(_mix(self.seed)))
            if self.num_workers > 0:
                # Ends the workers on close, when this batcher is collected, or at exit. The finalizer holds the
                # loader, so that the loader is never garbage along with the batcher: collected in one cycle with
                # it, the loader's queues could close before it told its workers to end, and workers that ignore
                # SIGTERM would stay on (and the exit would wait for them).
                self._workers = weakref.finalize(self, _end_workers, self._loader, os.getpid())
                self._workers.atexit = False  # _close_all ends them at exit, before torch's exit hooks run
                _WITH_WORKERS.add(self)
        return self._loader

    def close(self) -> None:
        """End the worker processes now; a later pass starts new ones."""
        if self._workers is not None:
            self._workers()
        self._loader = self._workers = None


def _end_workers(loader: DataLoader, owner: int) -> None:
    """Shut down the workers a DataLoader keeps between passes (persistent_workers), if it has started them; only
    in the process that started them (a process forked from it holds a copy of the loader, and no workers)."""
    if os.getpid() != owner:
        return
    workers, loader._iterator = loader._iterator, None
    if workers is not None:
        workers._shutdown_workers()


class _PassBatches:
    """The DataLoader's batch sampler: the index batches of the pass in progress, set before the pass. It stays in
    the main process (the workers get each batch's indices), so setting it needs no word to the workers."""

    def __init__(self):
        self.batches: Iterable[np.ndarray] = ()

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)


class _Samples(torch.utils.data.Dataset):
    """Samples by index; `__getitems__` takes a whole batch of indices in one tensor op."""

    def __init__(self, x: torch.Tensor | RowsOf, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__(np.array([index]))
        return x[0], y[0]

    def __getitems__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(indices)
        x = self.x.read(indices) if isinstance(self.x, RowsOf) else self.x.index_select(0, index)
        return x, self.y.index_select(0, index)


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate function: `__getitems__` already made the batch (module level, so workers can pickle it)."""
    return batch


_WITH_WORKERS: weakref.WeakSet[LoaderBatcher] = weakref.WeakSet()
"""The LoaderBatchers of this process whose DataLoader has (or will have) workers: closed at exit."""


@atexit.register
def _close_all() -> None:
    """At exit torch's DataLoader no longer ends its workers itself: it leaves them to multiprocessing, which sends
    them SIGTERM (which `train`'s workers ignore) and waits for them. atexit runs the handler registered last
    first, and `import torch`, above, registered both of theirs."""
    for batcher in list(_WITH_WORKERS):
        batcher.close()


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers; hashing a tuple of ints is the same in every Python process."""
    return hash(numbers) & (2**63 - 1)
