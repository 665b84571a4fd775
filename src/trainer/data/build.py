"""From a loader's arrays to train/val/test tensors: seeded stratified splits, statistics fitted on train only.

Tabular sets become float32 tensors standardised here, once. Image sets (uint8, (N, C, H, W)) stay uint8: their
per-channel statistics go to a `Normalize` that the batcher applies per batch, on the device. A memory-mapped set
(np.memmap, an image folder's cache) is split into `RowsOf` it, which read their rows only when asked: whole, into
tensors, for data.pipeline=device; batch by batch, by the DataLoader workers, for data.pipeline=dataloader.
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
from trainer.data.batcher import RowsOf
from trainer.data.preprocessing import DataDescription, Standardize
from trainer.data.transforms import Augment, Normalize

# Keys of a data config that say what the set is for and how to split and serve it; every other key goes to the
# loader (`_target_`).
PIPELINE_KEYS = ("task", "batch_size", "drop_last", "val_fraction", "test_fraction", "split_seed", "standardize",
                 "augment", "pipeline", "num_workers", "pin_memory")

AUTO_FRACTIONS = {"val_fraction": 0.1, "test_fraction": 0.2}
"""data.val_fraction=auto, data.test_fraction=auto (data=image_folder): a set's own val/ or test/ folder where it
has one, else these fractions (train.yaml's) held out at random."""
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
    """The set's own test split, when it has one (torchvision's sets, an image folder's test/); otherwise
    data.test_fraction is held out."""
    val: Optional[Arrays] = None
    """The set's own validation split, when it has one (an image folder's val/); otherwise data.val_fraction is
    held out."""
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

    train: tuple[torch.Tensor | RowsOf, torch.Tensor]
    val: tuple[torch.Tensor | RowsOf, torch.Tensor]
    test: tuple[torch.Tensor | RowsOf, torch.Tensor]
    """Features are RowsOf a memory-mapped set with data.pipeline=dataloader, which reads them batch by batch."""
    description: DataDescription
    """Task, sample shape, classes, names and the train split's statistics (already applied to tables): what every
    checkpoint keeps, so that `predict` prepares new samples as these were."""
    augment: Optional[Augment] = None
    """Images: random crop and flip of training batches."""


def build_data(cfg: DictConfig) -> DataSplits:
    """Load the set named by `cfg._target_`, split it (stratified for classes) and fit its statistics on train."""
    arrays: Arrays = instantiate(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in PIPELINE_KEYS]))
    task = infer_task(arrays.y) if cfg.task == "auto" else cfg.task
    parts = {name: part for name, part in (("train", arrays), ("val", arrays.val), ("test", arrays.test))
             if part is not None}
    targets, classes = _encode_targets([part.y for part in parts.values()], task)
    images = arrays.x.dtype == np.uint8 and arrays.x.ndim == 4
    features = [part.x if images else part.x.astype(np.float32) for part in parts.values()]

    train, val, test = _split(dict(zip(parts, zip(features, targets))), cfg, stratify=task != "regression")
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    for key, part in (("val_fraction", x_val), ("test_fraction", x_test), ("val_fraction", x_train)):
        if len(part) == 0:
            raise ConfigError(f"data.{key}", cfg.get(key), f"a fraction that leaves samples in each of train, val "
                                                           f"and test ({len(arrays.x)} samples)")
    normalize = feature_scaling = target_scaling = None
    if images:
        channels = x_train.shape[1]
        fit_on = x_train if isinstance(x_train, RowsOf) else torch.from_numpy(x_train)
        normalize = Normalize.fitted(fit_on) if cfg.standardize else Normalize.unit_range(channels)
    elif cfg.standardize:
        feature_scaling = Standardize.fitted(x_train)
        x_train, x_val, x_test = map(feature_scaling, (x_train, x_val, x_test))
    if task == "regression" and cfg.standardize:
        target_scaling = Standardize.fitted(y_train)
        y_train, y_val, y_test = map(target_scaling, (y_train, y_val, y_test))

    augment = _augment(cfg.get("augment"), arrays.x.shape)
    if augment is not None and augment.enabled and arrays.x.ndim != 4:
        raise ConfigError("data.augment", OmegaConf.to_container(cfg.augment),
                          f"crop_padding 0 and horizontal_flip false: samples of shape {arrays.x.shape[1:]} "
                          f"are not images (C, H, W)")

    flat_size = math.prod(arrays.x.shape[1:])  # values per sample
    feature_names = None if images else arrays.feature_names or [f"x{i}" for i in range(flat_size)]

    if isinstance(x_train, RowsOf) and cfg.pipeline == "device":
        _check_it_fits_in_memory(arrays.x.nbytes)

    def tensors(x_part: np.ndarray | RowsOf, y_part: np.ndarray) -> tuple[torch.Tensor | RowsOf, torch.Tensor]:
        if isinstance(x_part, RowsOf):  # the device holds the whole set; DataLoader workers read rows as needed
            x = x_part.read(np.arange(len(x_part))) if cfg.pipeline == "device" else x_part
        else:
            x = torch.from_numpy(np.ascontiguousarray(x_part))
        return x, torch.from_numpy(np.ascontiguousarray(y_part))

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


def _augment(setting, shape: tuple[int, ...]) -> Optional[Augment]:
    """data.augment: Augment's settings, or auto (data=image_folder): CIFAR-10's random crop (padded by an eighth of
    the shorter side: 4 pixels of 32) and horizontal flip for colour images, nothing for grey ones, which are
    mostly digits, letters and scans, that a flip makes other shapes of."""
    if setting != "auto":
        return None if setting is None else Augment(**setting)
    if len(shape) != 4 or shape[1] != 3:
        return None
    return Augment(crop_padding=max(1, round(min(shape[2:]) / 8)), horizontal_flip=True)


def _split(parts: dict[str, tuple[np.ndarray, np.ndarray]], cfg: DictConfig, stratify: bool):
    """(train, val, test) pairs of (x, y) from the set (`train`) and its own `val` and `test` splits if it has
    them. Each split it lacks is held out of it: test_fraction of it first, then val_fraction of the whole set (of
    its train part, when the test split is the set's own). A memory-mapped set's splits are RowsOf it."""
    rng = np.random.default_rng(cfg.split_seed)
    x, y = parts["train"]
    test_fraction = _fraction(cfg, "test_fraction", own="test" in parts)
    val_fraction = _fraction(cfg, "val_fraction", own="val" in parts)
    rest = np.arange(len(y))
    split = {name: (_rows(part_x), part_y) for name, (part_x, part_y) in parts.items() if name != "train"}
    if test_fraction is not None:
        rest, test = _held_out(y, rest, test_fraction, rng, stratify)
        split["test"] = _rows(x, test), y[test]
    if val_fraction is not None:
        share = val_fraction / (1 - test_fraction) if test_fraction is not None else val_fraction
        rest, val = _held_out(y, rest, share, rng, stratify)
        split["val"] = _rows(x, val), y[val]
    return (_rows(x, rest), y[rest]), split["val"], split["test"]


def _fraction(cfg: DictConfig, key: str, own: bool) -> Optional[float]:
    """data.val_fraction or data.test_fraction: the fraction to hold out, or None where the set's own split is
    used. auto (image folders) is the set's own split if it has one, else AUTO_FRACTIONS[key]."""
    value, split = cfg.get(key), {"val_fraction": "validation", "test_fraction": "test"}[key]
    if value == "auto":
        return None if own else AUTO_FRACTIONS[key]
    if own and value is not None:
        raise ConfigError(f"data.{key}", value, f"null: this set has its own {split} split, and that is what the "
                                                f"{split} uses")
    if not own and value is None:
        raise ConfigError(f"data.{key}", None, f"a number in (0, 1): this set has no {split} split of its own")
    return value


def _check_it_fits_in_memory(size: int) -> None:
    """data.pipeline=device reads a memory-mapped set (an image folder's cache) into memory whole: refused in one
    line, before it is read, when it would take more than half the memory the system has available, where the
    system would otherwise swap or kill the run part-way."""
    available = available_memory()
    if available is not None and size > available / 2:
        raise ConfigError("data.pipeline", "device", f"dataloader: the set's {size / 2**30:.1f} GB are more than half "
                                                     f"of the {available / 2**30:.1f} GB of memory available; "
                                                     f"data.pipeline=dataloader reads them from the cache batch by "
                                                     f"batch")


def available_memory() -> Optional[int]:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable); None where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rows(x: np.ndarray, indices: Optional[np.ndarray] = None) -> np.ndarray | RowsOf:
    """The samples at `indices` (all: None) of `x`: RowsOf a memory-mapped array, which indexing would copy into
    memory; a copy of any other."""
    if isinstance(x, np.memmap):
        return RowsOf(x, indices)
    return x if indices is None else x[indices]


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
