"""What a run fitted on its train split to prepare samples, and the description of its data a checkpoint keeps.

Tables are standardised once, in numpy, by `Standardize` (regression targets too); images are normalised per
batch by `transforms.Normalize`. `DataDescription` gathers these statistics with the shape of a sample and the
names of the features and classes. A checkpoint holds it as plain values (lists, numbers, strings), so that it
stays loadable with weights_only=True, and `predict` turns a raw file into the model's input, and the model's
output back into a class or a value in the data's units, without loading the data set again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from trainer.config import POSITIVE, POSITIVE_INT, is_finite_number
from trainer.data.transforms import Normalize
from trainer.vocabulary import TASKS


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

    @property
    def target_std(self) -> Optional[torch.Tensor]:
        """Regression with data.standardize: the train targets' standard deviation, shape (T,), by which they were
        divided; errors are reported in the data's units with it. None when the targets were not scaled."""
        return None if self.targets is None else torch.from_numpy(self.targets.std)

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


PLAIN_KEYS = ("task", "input_shape", "num_classes", "num_targets", "class_names", "feature_names", "pixels", "features",
              "targets")
"""The keys of DataDescription.to_plain()."""


def plain_problem(plain: Any) -> Optional[str]:
    """What keeps `plain`, read from a file a stranger may have written (a checkpoint, an exported model's JSON), from
    being a description `to_plain` writes; None when it is one. Its names and statistics must fit the shapes the
    model and the samples are built with: otherwise `predict` would fail on a misfit tensor, name a class that is
    not there, or divide by a standard deviation of 0."""
    if not isinstance(plain, dict) or set(plain) != set(PLAIN_KEYS):
        return f"its data description is not a mapping of {', '.join(PLAIN_KEYS)}"
    task, shape = plain["task"], plain["input_shape"]
    if task not in TASKS:
        return f"its data task is {task!r:.40}, not one of {', '.join(TASKS)}"
    if not (isinstance(shape, list) and shape and all(POSITIVE_INT.accepts(size) for size in shape)):
        return f"its data input_shape is {shape!r:.40}, not a list of sizes"
    regression, images = task == "regression", plain["pixels"] is not None
    counted = "num_targets" if regression else "num_classes"
    if not POSITIVE_INT.accepts(plain[counted]) or plain["num_classes" if regression else "num_targets"] is not None:
        return (f"its data has num_classes {plain['num_classes']!r:.40} and num_targets {plain['num_targets']!r:.40}, "
                f"where a {task} model has the {counted} alone ({POSITIVE_INT.allowed})")
    if images and len(shape) != 3:
        return f"its data are images of shape {shape}, not (channels, height, width)"
    expected = {  # key: the length of its names, or the shape of its statistics; None where it must be null
        "class_names": None if regression else plain["num_classes"],
        "feature_names": None if images else math.prod(shape),
        "pixels": (shape[0],) if images else None,
        "features": None if images else tuple(shape),
        "targets": (plain["num_targets"],) if regression else None,
    }
    for key, fit in expected.items():
        value = plain[key]
        if value is None and (fit is None or key != "class_names"):  # a classifier's class names alone are required
            continue
        fits = fit is not None and (_names_fit(value, fit) if key.endswith("_names") else _statistics_fit(value, fit))
        if not fits:
            allowed = ("null" if fit is None else f"{fit} names" if key.endswith("_names")
                       else f"a mean and a std > 0 of shape {fit}")
            return f"its data {key} is {value!r:.60}, not {allowed} ({task}, input_shape {shape})"
    return None


def _names_fit(names: Any, count: int) -> bool:
    return isinstance(names, list) and len(names) == count and all(isinstance(name, str) for name in names)


def _statistics_fit(statistics: Any, shape: tuple[int, ...]) -> bool:
    return (isinstance(statistics, dict) and set(statistics) == {"mean", "std"}
            and _numbers_fit(statistics["mean"], shape, is_finite_number)
            and _numbers_fit(statistics["std"], shape, POSITIVE.accepts))


def _numbers_fit(values: Any, shape: tuple[int, ...], accepts: Callable[[Any], bool]) -> bool:
    """Nested lists of `shape` whose every number `accepts`."""
    if not shape:
        return accepts(values)
    return (isinstance(values, list) and len(values) == shape[0]
            and all(_numbers_fit(value, shape[1:], accepts) for value in values))
