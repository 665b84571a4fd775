"""A run's train, val and test batchers, from its data splits: on the device, or through DataLoader workers.

A split's samples are a tensor, or `RowsOf` a memory-mapped array (a set too large to copy into memory, which the
dataloader pipeline reads batch by batch; the device pipeline reads it whole, once)."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from trainer.data.batcher import Batcher, LoaderBatcher, RowsOf
from trainer.data.build import DataSplits

log = logging.getLogger(__name__)


def batchers(data_cfg: DictConfig, data: DataSplits, model: torch.nn.Module, device: torch.device, seed: int,
             eval_batch_size: int, rank: int = 0, world_size: int = 1,
             memory_format: torch.memory_format = torch.contiguous_format,
             worker_init_fn: Optional[Callable[[int], None]] = None,
             overfit_batches: int = 0) -> tuple[Batcher, Batcher, Batcher]:
    """Train, val and test batches: from tensors moved to the device once (data.pipeline=device), or gathered
    in host memory by DataLoader workers (each started with `worker_init_fn`) and copied per batch
    (data.pipeline=dataloader). Process `rank` of `world_size` serves its share of every batch, in the model's
    memory format. `overfit_batches` N >= 1 (trainer.overfit_batches): training and validation both serve the
    first N batches of the train split, in the same order every epoch and unaugmented, the same batches."""
    share = {"rank": rank, "world_size": world_size, "memory_format": memory_format}
    if data_cfg.pipeline == "dataloader":
        make = functools.partial(LoaderBatcher, device=device, num_workers=data_cfg.num_workers,
                                 pin_memory=data_cfg.pin_memory, worker_init_fn=worker_init_fn, **share)
    else:
        def make(x: torch.Tensor | RowsOf, y: torch.Tensor, batch_size: int, **options) -> Batcher:
            return Batcher(_whole(x).to(device), y.to(device), batch_size, **share, **options)
    batch_size = data_cfg.batch_size
    drop_last = data_cfg.drop_last or _lone_last_sample_breaks_batchnorm(model, len(data.train[0]), batch_size)
    test = make(*data.test, eval_batch_size, shuffle=False, normalize=data.description.pixels)
    if overfit_batches:  # two batchers of the same batches: each keeps its own place in its epoch
        train, val = (make(*data.train, batch_size, drop_last=drop_last, shuffle=False,
                           normalize=data.description.pixels) for _ in range(2))
        if overfit_batches > len(train):
            log.warning("trainer.overfit_batches=%d: the train split has only %d batches of data.batch_size=%d; "
                        "all of them are trained and validated on", overfit_batches, len(train), batch_size)
        train.limit = val.limit = overfit_batches
        return train, val, test
    return (make(*data.train, batch_size, drop_last=drop_last, seed=seed, normalize=data.description.pixels,
                 augment=data.augment),
            make(*data.val, eval_batch_size, shuffle=False, normalize=data.description.pixels),
            test)


def limit_batches(batches: Batcher, limit: int | float) -> None:
    """Serve at most `limit` batches of each epoch (trainer.limit_*_batches; fast_dev_run): a count (an int) or a
    fraction (a float) of the batches the batcher serves now; 1.0 leaves them all."""
    batches.limit = batches_allowed(limit, len(batches))


def batches_allowed(limit: int | float, batches: int) -> int:
    """How many of `batches` a limit allows: an int is a count (at most all of them), a float a fraction of them,
    rounded down but at least one, as one batch is what a limit of a few batches per epoch is after."""
    if isinstance(limit, float):
        return max(1, int(batches * limit))
    return min(limit, batches)


def _whole(x: torch.Tensor | RowsOf) -> torch.Tensor:
    """The samples as one tensor: memory-mapped rows read into memory (for the device, which must hold them)."""
    return x.read(np.arange(len(x))) if isinstance(x, RowsOf) else x


def _lone_last_sample_breaks_batchnorm(model: torch.nn.Module, num_samples: int, batch_size: int) -> bool:
    """BatchNorm cannot normalise a batch of one sample; drop such a last batch rather than fail the run."""
    batchnorms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    has_batchnorm = any(isinstance(m, batchnorms) for m in model.modules())
    if has_batchnorm and num_samples % batch_size == 1:
        log.info("dropping the last batch of each epoch: it holds 1 sample, and BatchNorm needs at least 2")
        return True
    return False

