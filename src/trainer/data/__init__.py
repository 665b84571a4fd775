"""Data sets as tensors: `build_data(cfg.data)` loads, splits and fits statistics; batchers serve the batches."""

from trainer.data.batcher import Batcher, LoaderBatcher, RowsOf
from trainer.data.build import Arrays, DataSplits, build_data
from trainer.data.preprocessing import DataDescription
from trainer.data.split_batchers import batchers, limit_batches

__all__ = ["Arrays", "Batcher", "DataDescription", "DataSplits", "LoaderBatcher", "RowsOf", "batchers", "build_data",
           "limit_batches"]
