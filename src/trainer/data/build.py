"""From a loader's arrays to train/val/test tensors: seeded stratified splits, statistics fitted on train only.

Tabular sets become float32 tensors standardised here, once. Image sets (uint8, (N, C, H, W)) stay uint8: their
per-channel statistics go to a `Normalize` that the batcher applies per batch, on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainer.config import ConfigError
from trainer.data.preprocessing import DataDescription, Standardize
from trainer.data.transforms import Augment, Normalize

# Keys of a data config that say what the set is for and how to split and serve it; every other key goes to the
# loader (`_target_`).
PIPELINE_KEYS = ("task", "batch_size", "drop_last", "val_fraction", "test_fraction", "split_seed", "standardize",
                 "augment", "pipeline", "num_workers", "pin_memory")

MAX_INFERRED_CLASSES = 20
"""data.task=auto: a target of at most this many distinct integers is a set of classes; more is regression."""


@dataclass
class Arrays:
    """What a loader returns: all samples of a set. (What they are for, the task, is the data config's.)"""

    x: np.ndarray
    """Features, shape (N, *input_shape): float, or uint8 (N, C, H, W) for images."""
    y: np.ndarray
    """Labels (numbers or text) for classification; values, shape (N,) or (N, T), for regression."""
    test: Optional[Arrays] = None
    """The set's own test split, when it has one (torchvision's sets); otherwise data.test_fraction is held out."""
    feature_names: Optional[list[str]] = None
    """Tables: a name per value of a flattened sample (a CSV file's columns); None: x0, x1, ..."""
    class_names: Optional[list[str]] = None
    """Classes given as indices 0..K-1: the name of each (torchvision's `classes`); None: the labels themselves."""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if self.feature_names is not None and len(self.feature_names) != math.prod(self.x.shape[1:]):
            raise ValueError(f"{len(self.feature_names)} feature names for samples of shape {self.x.shape[1:]}")


@dataclass
class DataSplits:
    """The three splits as tensors (float32 or uint8 features; int64 classes or float32 (N, T) targets), and what
    describes them."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    description: DataDescription
    """Task, sample shape, classes, names and the train split's statistics (already applied to tables): what every
    checkpoint keeps, so that `predict` prepares new samples as these were."""
    augment: Optional[Augment] = None
    """Images: random crop and flip of training batches."""


def build_data(cfg: DictConfig) -> DataSplits:
    """Load the set named by `cfg._target_`, split it (stratified for classes) and fit its statistics on train."""
    arrays: Arrays = instantiate(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in PIPELINE_KEYS]))
    task = infer_task(arrays.y) if cfg.task == "auto" else cfg.task
    parts = [arrays] if arrays.test is None else [arrays, arrays.test]
    targets, classes = _encode_targets([part.y for part in parts], task)
    images = arrays.x.dtype == np.uint8 and arrays.x.ndim == 4
    features = [part.x if images else part.x.astype(np.float32) for part in parts]

    train, val, test = _split(features, targets, cfg, stratify=task != "regression")
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    for key, part in (("val_fraction", x_val), ("test_fraction", x_test), ("val_fraction", x_train)):
        if len(part) == 0:
            raise ConfigError(f"data.{key}", cfg.get(key), f"a fraction that leaves samples in each of train, val "
                                                           f"and test ({len(arrays.x)} samples)")
    normalize = feature_scaling = target_scaling = None
    if images:
        channels = x_train.shape[1]
        normalize = Normalize.fitted(torch.from_numpy(x_train)) if cfg.standardize else Normalize.unit_range(channels)
    elif cfg.standardize:
        feature_scaling = Standardize.fitted(x_train)
        x_train, x_val, x_test = map(feature_scaling, (x_train, x_val, x_test))
    if task == "regression" and cfg.standardize:
        target_scaling = Standardize.fitted(y_train)
        y_train, y_val, y_test = map(target_scaling, (y_train, y_val, y_test))

    augment = Augment(**cfg.augment) if cfg.get("augment") is not None else None
    if augment is not None and augment.enabled and arrays.x.ndim != 4:
        raise ConfigError("data.augment", OmegaConf.to_container(cfg.augment),
                          f"crop_padding 0 and horizontal_flip false: samples of shape {arrays.x.shape[1:]} "
                          f"are not images (C, H, W)")

    flat_size = math.prod(arrays.x.shape[1:])  # values per sample
    feature_names = None if images else arrays.feature_names or [f"x{i}" for i in range(flat_size)]

    def tensors(x_part: np.ndarray, y_part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x_part)), torch.from_numpy(np.ascontiguousarray(y_part))

    description = DataDescription(
        task=task, input_shape=tuple(arrays.x.shape[1:]), num_classes=None if classes is None else len(classes),
        num_targets=y_train.shape[1] if task == "regression" else None,
        class_names=_class_names(classes, arrays.class_names), feature_names=feature_names, pixels=normalize,
        features=feature_scaling, targets=target_scaling)
    return DataSplits(train=tensors(x_train, y_train), val=tensors(x_val, y_val), test=tensors(x_test, y_test),
                      description=description, augment=augment)


def infer_task(y: np.ndarray) -> str:
    """data.task=auto: text labels, or at most MAX_INFERRED_CLASSES distinct integers, are classes (binary when
    there are 2); any other numbers are regression targets."""
    if y.dtype.kind in "iufb":
        values = np.unique(y)
        if len(values) > MAX_INFERRED_CLASSES or not np.array_equal(values, np.round(values)):
            return "regression"
    else:
        values = np.unique(y)
    return "binary" if len(values) == 2 else "multiclass"


def _encode_targets(targets: list[np.ndarray], task: str) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
    """Classes -> int64 indices 0..K-1 in sorted label order, and the sorted labels (K,); regression -> float32
    (N, T), and None."""
    if task == "regression":
        if any(y.dtype.kind not in "iufb" for y in targets):
            raise ConfigError("data.task", task, "multiclass or binary: the target has text labels")
        return [y.astype(np.float32).reshape(len(y), -1) for y in targets], None
    classes, codes = np.unique(np.concatenate(targets), return_inverse=True)
    if task == "binary" and len(classes) != 2:
        raise ConfigError("data.task", "binary", f"multiclass: the labels have {len(classes)} classes")
    return np.split(codes.astype(np.int64).reshape(-1), np.cumsum([len(y) for y in targets])[:-1]), classes


def _class_names(classes: Optional[np.ndarray], names: Optional[list[str]]) -> Optional[list[str]]:
    """The name of each class index: the set's own name of the label (an index into `names`), or the label."""
    if classes is None:
        return None
    return [str(names[int(label)]) if names is not None else str(label) for label in classes]


def _split(features: list[np.ndarray], targets: list[np.ndarray], cfg: DictConfig, stratify: bool):
    """(train, val, test) pairs of (x, y). A set with its own test split keeps it, and val_fraction is of its
    train part; otherwise test_fraction and then val_fraction, both of the whole set, are held out."""
    rng = np.random.default_rng(cfg.split_seed)
    x, y = features[0], targets[0]
    if len(features) == 2:
        if cfg.test_fraction is not None:
            raise ConfigError("data.test_fraction", cfg.test_fraction,
                              "null: this set has its own test split, and that is what the test uses")
        rest, val = _held_out(y, np.arange(len(y)), cfg.val_fraction, rng, stratify)
        return (x[rest], y[rest]), (x[val], y[val]), (features[1], targets[1])
    if cfg.test_fraction is None:
        raise ConfigError("data.test_fraction", None, "a number in (0, 1): this set has no test split of its own")
    rest, test = _held_out(y, np.arange(len(y)), cfg.test_fraction, rng, stratify)
    train, val = _held_out(y, rest, cfg.val_fraction / (1 - cfg.test_fraction), rng, stratify)
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def _held_out(y: np.ndarray, among: np.ndarray, fraction: float, rng: np.random.Generator, stratify: bool):
    """Split the sample indices `among` into (kept, held out), holding out round(fraction * len(among)) of them
    at random; with `stratify`, as nearly that fraction of each class as whole samples allow (the largest
    remainders get the odd samples), so that every split has the classes in the same proportions."""
    groups = [among[y[among] == label] for label in np.unique(y[among])] if stratify else [among]
    exact = fraction * np.array([len(group) for group in groups])
    counts = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - counts), kind="stable")
    counts[by_remainder[:round(fraction * len(among)) - counts.sum()]] += 1
    held = np.concatenate([rng.permutation(group)[:count] for group, count in zip(groups, counts)])
    return np.setdiff1d(among, held), np.sort(held)
