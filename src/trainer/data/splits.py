"""From a loader's arrays to train/val/test tensors: seeded stratified splits and standardisation fitted on train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainer.config import ConfigError

# Keys of a data config that say what the set is for and how to split and serve it; every other key goes to the
# loader (`_target_`).
SPLIT_KEYS = ("task", "batch_size", "drop_last", "val_fraction", "test_fraction", "split_seed", "standardize")


@dataclass
class Arrays:
    """What a loader returns: all samples of a set. (What they are for, the task, is the data config's.)"""

    x: np.ndarray
    """Features, shape (N, *input_shape)."""
    y: np.ndarray
    """Class indices, shape (N,), for classification; values, shape (N,) or (N, T), for regression."""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")


@dataclass
class DataSplits:
    """The three splits as tensors (float32 features; int64 classes or float32 (N, T) targets) and their shapes."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    task: str
    input_shape: tuple[int, ...]
    num_classes: Optional[int]
    """Number of classes for classification (2 for binary); None for regression."""
    target_std: Optional[torch.Tensor] = None
    """Regression: the train targets' standard deviation, shape (T,); errors are reported in the data's units."""

    @property
    def num_targets(self) -> int:
        """Regression: values predicted per sample."""
        return self.train[1].shape[1]


def build_data(cfg: DictConfig) -> DataSplits:
    """Load the set named by `cfg._target_`, split it (stratified for classes) and standardise it on train."""
    loader_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in SPLIT_KEYS])
    arrays: Arrays = instantiate(loader_cfg)
    classification = cfg.task != "regression"
    x = arrays.x.astype(np.float32)
    y = arrays.y.astype(np.int64) if classification else arrays.y.astype(np.float32).reshape(len(arrays.y), -1)

    num_classes = int(y.max()) + 1 if classification else None
    if cfg.task == "binary" and num_classes != 2:
        raise ConfigError("data.task", "binary", f"multiclass: the labels have {num_classes} classes")

    x_train, y_train, x_val, y_val, x_test, y_test = _split(x, y, cfg.val_fraction, cfg.test_fraction,
                                                            cfg.split_seed, stratify=classification)
    target_std = None
    if cfg.standardize:
        x_train, x_val, x_test = _standardize(x_train, x_val, x_test)
        if not classification:
            target_std = torch.from_numpy(y_train.std(axis=0).clip(min=1e-12))
            y_train, y_val, y_test = _standardize(y_train, y_val, y_test)

    def tensors(x_part: np.ndarray, y_part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x_part)), torch.from_numpy(np.ascontiguousarray(y_part))

    return DataSplits(
        train=tensors(x_train, y_train), val=tensors(x_val, y_val), test=tensors(x_test, y_test),
        task=cfg.task, input_shape=tuple(x.shape[1:]),
        num_classes=num_classes, target_std=target_std,
    )


def _split(x, y, val_fraction: float, test_fraction: float, seed: int, stratify: bool):
    """Carve test, then validation, out of the samples; both fractions are of the whole set."""
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
        stratify=y_rest if stratify else None)
    return x_train, y_train, x_val, y_val, x_test, y_test


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean, unit variance per feature, with statistics from train only (a constant feature stays 0)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return [((part - mean) / std).astype(np.float32) for part in (train, *others)]
