"""Data sets as tensors: `build_data(cfg.data)` loads, splits and standardises; `Batcher` serves the batches."""

from trainer.data.batcher import Batcher
from trainer.data.splits import Arrays, DataSplits, build_data

__all__ = ["Arrays", "Batcher", "DataSplits", "build_data"]
