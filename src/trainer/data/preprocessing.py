"""What a run fitted on its train split to prepare samples, and the description of its data a checkpoint keeps.

Tables are standardised once, in numpy, by `Standardize` (regression targets too); images are normalised per
batch by `transforms.Normalize`. `DataDescription` gathers these statistics with the shape of a sample and the
names of the features and classes. A checkpoint holds it as plain values (lists, numbers, strings), so that it
stays loadable with weights_only=True, and `predict` turns a raw file into the model's input, and the model's
output back into a class or a value in the data's units, without loading the data set again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from trainer.data.transforms import Normalize


@dataclass
class Standardize:
    """(x - mean) / std per feature (or per target), with statistics fitted on the train split."""

    mean: np.ndarray
    """float32, the shape of one sample's features (or targets)."""
    std: np.ndarray
    """float32, the same shape; 1 where the train split holds a constant, so that the feature stays 0."""

    @classmethod
    def fitted(cls, train: np.ndarray) -> Standardize:
        """The statistics of float32 train samples (N, *shape), over the samples. They are computed in float64: in
        float32 the squares of values beyond 1.8e19 overflow, and such a feature would become 0 everywhere."""
        std = train.std(axis=0, dtype=np.float64).astype(np.float32)
        std[std == 0] = 1.0
        return cls(train.mean(axis=0, dtype=np.float64).astype(np.float32), std)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(N, *shape) in the data's units -> standardised float32."""
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, standardised: np.ndarray) -> np.ndarray:
        """(N, *shape) standardised -> the data's units: a regression model's output back to target values."""
        return standardised * self.std + self.mean


@dataclass
class DataDescription:
    """What the model was trained on, short of the samples: enough to prepare new ones and read its output."""

    task: str
    """multiclass, binary or regression."""
    input_shape: tuple[int, ...]
    """One sample's shape: (C, H, W) for images, (F,) for most tables."""
    num_classes: Optional[int] = None
    """Classification: number of classes (2 for binary); None for regression."""
    num_targets: Optional[int] = None
    """Regression: values predicted per sample; None for classification."""
    class_names: Optional[list[str]] = None
    """Classification: the name of class index 0..K-1 (the label as it was in the data, or the set's own name)."""
    feature_names: Optional[list[str]] = None
    """Tables: the name of each input value, in the order of the flattened input; None for images."""
    pixels: Optional[Normalize] = None
    """Images (uint8): the per-channel normalisation of every training batch."""
    features: Optional[Standardize] = None
    """Tables with data.standardize: the train split's feature statistics."""
    targets: Optional[Standardize] = None
    """Regression with data.standardize: the train split's target statistics."""

    def to_plain(self) -> dict[str, Any]:
        """Lists, numbers, strings and None: what a checkpoint read with weights_only=True may hold."""
        return {"task": self.task, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "num_targets": self.num_targets, "class_names": self.class_names,
                "feature_names": self.feature_names, "pixels": _plain_statistics(self.pixels),
                "features": _plain_statistics(self.features), "targets": _plain_statistics(self.targets)}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> DataDescription:
        """The description `to_plain` wrote, with the same float32 statistics."""
        pixels, features, targets = (plain[key] for key in ("pixels", "features", "targets"))
        return cls(
            task=plain["task"], input_shape=tuple(plain["input_shape"]), num_classes=plain["num_classes"],
            num_targets=plain["num_targets"], class_names=plain["class_names"], feature_names=plain["feature_names"],
            pixels=None if pixels is None else Normalize(*(torch.tensor(pixels[key], dtype=torch.float32)
                                                           for key in ("mean", "std"))),
            features=None if features is None else Standardize(*_float32_arrays(features)),
            targets=None if targets is None else Standardize(*_float32_arrays(targets)),
        )


def _plain_statistics(statistics: Optional[Normalize | Standardize]) -> Optional[dict[str, list]]:
    # float32 values become Python floats exactly, and come back as the same float32 values.
    return None if statistics is None else {"mean": statistics.mean.tolist(), "std": statistics.std.tolist()}


def _float32_arrays(statistics: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(statistics["mean"], dtype=np.float32), np.asarray(statistics["std"], dtype=np.float32)
