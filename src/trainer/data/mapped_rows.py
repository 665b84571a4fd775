"""Rows of a numpy array read batch by batch, typically of a memory-mapped set larger than memory (an image
folder's cache): in LoaderBatcher's worker processes, which read the rows of their batches from the file. A worker
started by forking shares the parent's mapping; one started by spawning gets the rows pickled as their file and
place in it, and maps the file again, once it has checked that the file is still the one the run mapped.
"""

from __future__ import annotations

import mmap
import os
from typing import Optional

import numpy as np
import torch


class RowsOf:
    """Rows of a numpy array, read only when a batch asks for them: all of them, or `rows` (a split of a
    `np.memmap` holding a whole set, which indexing would copy into memory). In a worker process started by
    spawning rather than forking (macOS, Windows, Python 3.14's forkserver), a memory-mapped array is opened
    again from its file instead of being copied into the worker: the file these rows were made of, or a
    ReplacedFile error if another has taken its path since (another run's rebuilt cache, say)."""

    def __init__(self, array: np.ndarray | _Reopened, rows: Optional[np.ndarray] = None):
        self._array = array
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.file = array.identity if isinstance(array, _Reopened) else _mapped_file(array)
        """The identity of the file the array maps, taken as these rows are made: what a spawned worker checks
        the file it opens against (a mapping cannot say which file it maps)."""

    device = torch.device("cpu")
    """Where the rows are: host memory (Batcher makes the epoch's order there)."""

    @property
    def array(self) -> np.ndarray:
        """The array; in a spawned worker, its file mapped again when first asked for, as the worker reads its
        first batch: a ReplacedFile error then reaches the main process as the worker's error, where one raised
        while the worker starts would only end it ("exited unexpectedly")."""
        if isinstance(self._array, _Reopened):
            self._array = self._array.mapped()
        return self._array

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.array.shape[1:])

    def read(self, index: np.ndarray) -> torch.Tensor:
        """The rows at `index` (positions among these rows), as a tensor of their own."""
        batch = np.take(self.array, index if self.rows is None else self.rows[index], axis=0)
        mapping = _file_mapping(self.array)
        if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            # The file's pages stay in the page cache, but this process stops mapping them: its resident memory
            # stays that of a batch however much of the file it has read, rather than growing to the file's size.
            mapping.madvise(mmap.MADV_DONTNEED)
        return torch.from_numpy(batch)

    def __reduce__(self):
        return RowsOf, (_reopened(self.array, self.file), self.rows)


class ReplacedFile(OSError):
    """The file of a memory-mapped set is no longer the one this run mapped: another has taken its path, or it was
    written to."""


def _file_mapping(array: np.ndarray) -> Optional[mmap.mmap]:
    """The shared mapping of a file that a np.memmap (or a view of one) reads; None for any other array, and for a
    copy-on-write one (mode "c"), whose pages may hold changes that its file does not."""
    mapping = getattr(array, "_mmap", None)
    return mapping if mapping is not None and getattr(array, "mode", None) in ("r", "r+", "w+") else None


def _mapped_file(array: np.ndarray) -> Optional[tuple[int, ...]]:
    """The identity of the file whose shared mapping `array` reads, as that file is now; None for any other."""
    if _file_mapping(array) is None or array.filename is None:
        return None
    return _identity(os.stat(array.filename))


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What tells a file from another put at its path (device and inode), or from itself rewritten (size, mtime)."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


class _Reopened:
    """A memory-mapped array as pickle sends it: its file, that file's identity, and where in the file it lies."""

    def __init__(self, filename: str, identity: tuple[int, ...], dtype: np.dtype, offset: int,
                 shape: tuple[int, ...]):
        self.filename, self.identity, self.dtype, self.offset, self.shape = filename, identity, dtype, offset, shape

    def mapped(self) -> np.memmap:
        """The array mapped again from its file, if that is still the file of `identity`: a cache rebuilt by
        another run is renamed to the same path, and its rows at these offsets are other images. The file is
        checked and mapped through one descriptor, so that no other can take its path in between."""
        with open(self.filename, "rb") as file:
            if _identity(os.fstat(file.fileno())) != self.identity:
                raise ReplacedFile(f"{self.filename} changed while this run was using it (another process replaced "
                                   f"or wrote it): its rows are no longer the ones this run read; run again")
            return np.memmap(file, self.dtype, "r", self.offset, self.shape)


def _reopened(array: np.ndarray, identity: Optional[tuple[int, ...]]) -> np.ndarray | _Reopened:
    """A C-contiguous view of a file's shared mapping (np.memmap) as that file, its `identity` and its place in
    it; any other array as it is (pickle copies it)."""
    mapping = _file_mapping(array)
    if mapping is None or identity is None or not array.flags.c_contiguous:
        return array
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap began its mapping
    offset = start + array.ctypes.data - np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    return _Reopened(array.filename, identity, array.dtype, offset, array.shape)
