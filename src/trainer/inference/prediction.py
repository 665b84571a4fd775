"""The `predict` command: a trained model's predictions for new samples, each prepared as the training samples were.

The checkpoint's DataDescription says how: an image (PNG, JPEG, BMP or WebP), or a folder of them (listed as
training lists a class folder, by data.image_listing), becomes uint8 pixels of the training images' channels and
size (converted and resized by data.image_files, as data=image_folder converts and resizes its training images),
normalised per channel with the train split's statistics; rows of a table (a CSV file with a header row, as it is
or as .csv.gz, or a Parquet file, each read as training reads it; or a JSON object {feature: value} or a list of
them) are standardised with the train split's feature statistics. A classifier's output becomes the class and its
probabilities, a regression model's the values in the data's units.
Checkpoints from before checkpoints kept the description have the data set read again to fit it.

A file is read as a stranger may have written it: an image of more pixels than PIL allows (a decompression bomb), a
JSON file too large or nested too deeply to read, a key given twice, a number beyond float32's range are each
refused in one line, before they cost memory or turn into nan predictions.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from trainer.config import POSITIVE_INT, ConfigError, is_finite_number
from trainer.data import DataDescription, build_data
from trainer.data.columns import FLOAT32_MAX, Wanted
from trainer.data.image_files import IMAGE_MODES, IMAGE_SUFFIXES, UnreadableImage, image_header, read_pixels
from trainer.data.image_listing import image_paths
from trainer.data.table import TABLE_FILES, table_columns
from trainer.inference.trained_model import Trained, load, required
from trainer.observe.text_table import aligned
from trainer.training.metrics import class_probabilities, predicted_classes

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (*TABLE_FILES, ".json")
MAX_JSON_BYTES = 200 * 2**20
"""The largest JSON input read: its rows become Python objects many times the file's size, so a larger file is
refused before it is read."""


@dataclass
class Prediction:
    sample: str
    """The image's file name, or `row N` of a table (counted from 1)."""
    predicted: Optional[str] = None
    """Classifiers: the name of the predicted class."""
    probabilities: Optional[dict[str, float]] = None
    """Classifiers: each class's probability, by name, in the order of the class indices."""
    values: Optional[list[float]] = None
    """Regression: the value of each target, in the data's units."""


def predict(trained: Trained, source: Path) -> list[Prediction]:
    """The model's prediction for each sample of `source`."""
    description = description_of(trained)
    x, samples = read_samples(source, description)  # (N, *input_shape) floats
    _, model = trained.model(description)
    with torch.inference_mode(), trained.autocast():
        output = model(x.to(trained.device)).float().cpu()  # (N, num_outputs)
    if description.task == "regression":
        values = output.numpy() if description.targets is None else description.targets.inverse(output.numpy())
        return [Prediction(sample, values=row.tolist()) for sample, row in zip(samples, values)]
    probabilities = class_probabilities(output)  # (N, K)
    names = description.class_names
    return [Prediction(sample, names[predicted], probabilities=dict(zip(names, row)))
            for sample, predicted, row in zip(samples, predicted_classes(output).tolist(), probabilities.tolist())]


def description_of(trained: Trained) -> DataDescription:
    """What the checkpoint keeps of its data; for a checkpoint that keeps none, the data set read again."""
    plain = trained.state.get("data")
    if plain is not None:
        return DataDescription.from_plain(plain)
    log.info("%s keeps no description of its data (an older train wrote it): reading the data set again",
             trained.path)
    return build_data(trained.config.data).description


def read_samples(source: Path, description: DataDescription) -> tuple[torch.Tensor, list[str]]:
    """The samples of `source` as the model's input, float32 (N, *input_shape), and a name for each. An input the
    model cannot take is a ConfigError naming what it can."""
    if not os.path.exists(source):  # False for a name too long for the OS, where Path.exists raises
        raise ConfigError("input", str(source), "a file or folder that exists")
    suffix = source.suffix.lower()
    if description.pixels is not None:
        if source.is_dir() or suffix in IMAGE_SUFFIXES:
            pixels, names = _images(source, description)
            return description.pixels(pixels), names
        raise ConfigError("input", str(source), f"a PNG, JPEG, BMP or WebP image, or a folder of them: this model "
                                                f"was trained on images of shape {description.input_shape}")
    if source.is_file() and source.name.lower().endswith(TABLE_SUFFIXES):
        x = _json_rows(source, description) if suffix == ".json" else _table_rows(source, description)
        x = x.reshape(len(x), *description.input_shape)
        if description.features is not None:
            x = description.features(x)
        return torch.from_numpy(x), [f"row {number}" for number in range(1, len(x) + 1)]
    raise ConfigError("input", str(source), f"a .csv, .csv.gz, .parquet or .json file of rows of the features "
                                            f"{_listed(description.feature_names)}: this model was trained on a table")


def _images(source: Path, description: DataDescription) -> tuple[torch.Tensor, list[str]]:
    """uint8 (N, C, H, W): each image converted to the model's channels and resized to its height and width, and
    its name (of a folder's, its path in the folder). A folder is listed as training lists a class folder (its
    subfolders' images too; hidden files, such as a Mac's ._NAME files, left alone)."""
    files = list(image_paths(source)) if source.is_dir() else [source]
    names = [path.relative_to(source).as_posix() for path in files] if source.is_dir() else [source.name]
    if not files:
        raise ConfigError("input", str(source), "a folder holding PNG, JPEG, BMP or WebP images (it holds none)")
    channels, height, width = description.input_shape
    if channels not in IMAGE_MODES:
        raise ConfigError("input", str(source), f"images this model takes: it was trained on {channels} channels, "
                                                f"and images have 1 or 3")
    pixels = np.stack([_pixels(path, channels, height, width) for path in files])  # (N, C, H, W)
    return torch.from_numpy(pixels), names


def _pixels(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image as uint8 (C, H, W), converted and resized as the training images were. An image of more pixels
    than PIL's limit is refused (image_header), whether PIL itself would refuse it or only warn: a small file that
    decodes to gigabytes (a decompression bomb) looks like that."""
    try:
        image_header(path)
        return read_pixels(path, channels, height, width)
    except UnreadableImage as error:
        raise ConfigError("input", str(path), f"a PNG, JPEG, BMP or WebP image ({error.reason})") from None


def _table_rows(source: Path, description: DataDescription) -> np.ndarray:
    """float32 (N, F): the feature columns, found by name, of a CSV file with a header row or a Parquet file (other
    columns are left alone, the target's too)."""
    names = description.feature_names

    def features_of(header: list[str]) -> Wanted:
        missing = [name for name in names if name not in header]
        if missing:
            raise ConfigError("input", str(source), f"a table with the feature columns {_listed(names)} (it has no "
                                                    f"column {missing[0]!r})")
        return Wanted(features=names)

    return table_columns(str(source), "input", features_of).x


def _json_rows(source: Path, description: DataDescription) -> np.ndarray:
    """float32 (N, F) from a JSON object {feature: number, ...} or a list of them (other keys are left alone)."""
    names = description.feature_names
    expected = f"a JSON object {{feature: number}} or a list of them, with the features {_listed(names)}"
    size = source.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ConfigError("input", str(source), f"{expected}, in a file of at most {MAX_JSON_BYTES // 2**20} MiB "
                                                f"(this one has {size / 2**20:.0f} MiB)")
    try:
        content = json.loads(source.read_text(encoding="utf-8"), object_pairs_hook=_object_of_distinct_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RepeatedKey) as error:
        raise ConfigError("input", str(source), f"{expected} ({error})") from None
    except RecursionError:
        raise ConfigError("input", str(source), f"{expected} (it nests lists or objects too deeply to read)") from None
    rows = content if isinstance(content, list) else [content]
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise ConfigError("input", str(source), f"{expected} (it holds {type(content).__name__} {content!r:.40})")
    for number, row in enumerate(rows, start=1):
        for name in names:
            if name not in row:
                raise ConfigError("input", str(source), f"{expected} (row {number} has no {name!r})")
            if not is_finite_number(row[name]):
                raise ConfigError("input", str(source), f"{expected} (row {number} has {name!r}: {row[name]!r:.40})")
            if abs(row[name]) > FLOAT32_MAX:  # the model's input is float32
                raise ConfigError("input", str(source), f"{expected}, within float32's range of ±{FLOAT32_MAX:.3g} "
                                                        f"(row {number} has {name!r}: {row[name]!r})")
    # As a CSV file's numbers are read: float64, then float32.
    return np.asarray([[row[name] for name in names] for row in rows], dtype=np.float64).astype(np.float32)


class RepeatedKey(ValueError):
    """A JSON object that gives a key twice."""


def _object_of_distinct_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object_pairs_hook: a JSON object as a dict; a key given twice is refused, where json alone would keep
    the last value and drop the other without a word."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise RepeatedKey(f"an object has the key {key!r} twice")
        seen.add(key)
    return dict(pairs)


def _listed(names: list[str], most: int = 10) -> str:
    """`a, b, c`; a long list cut after `most` names: `x0, x1, ..., x9, ... (64 in all)`."""
    return ", ".join(names) if len(names) <= most else f"{', '.join(names[:most])}, ... ({len(names)} in all)"


def prediction_lines(predictions: list[Prediction], top_k: int) -> list[str]:
    """A line per sample: its name, then the class and the top_k probabilities, or the values."""
    rows = []
    for prediction in predictions:
        if prediction.values is not None:
            shown = ", ".join(f"{value:.6g}" for value in prediction.values)
        else:
            top = sorted(prediction.probabilities.items(), key=lambda item: -item[1])[:top_k]
            shown = f"{prediction.predicted}  ({', '.join(f'{name} {p:.3f}' for name, p in top)})"
        rows.append((prediction.sample, shown))
    return aligned(rows)


def write_csv(predictions: list[Prediction], path: Path) -> None:
    """One row per sample: its name and prediction, then every class's probability (classifiers), or the value of
    each target (regression)."""
    first = predictions[0]
    if first.values is not None:
        names = ["value"] if len(first.values) == 1 else [f"value_{t}" for t in range(1, len(first.values) + 1)]
        header, rows = ["sample", *names], [[p.sample, *p.values] for p in predictions]
    else:
        header = ["sample", "predicted", *first.probabilities]
        rows = [[p.sample, p.predicted, *p.probabilities.values()] for p in predictions]
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])


def predicted(cfg: DictConfig) -> list[Prediction]:
    """What `predict` (or trainer.predict) does once configs/predict.yaml is composed: predict, and write output=
    if set."""
    if not POSITIVE_INT.accepts(cfg.top_k):
        raise ConfigError("top_k", cfg.top_k, POSITIVE_INT.allowed)
    trained = load(cfg)
    source = Path(required(cfg, "input", "an image, a folder of images, or a .csv, .csv.gz, .parquet or .json file of "
                                         "rows"))
    predictions = predict(trained, source)
    if cfg.output is not None:
        write_csv(predictions, Path(cfg.output))
    return predictions


def main(cfg: DictConfig) -> None:
    """`predict`: predicted()'s predictions printed, with top_k classes each."""
    predictions = predicted(cfg)
    print("\n".join(prediction_lines(predictions, cfg.top_k)))
    if cfg.output is not None:
        print(f"written to {cfg.output}")
