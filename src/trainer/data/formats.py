"""Stand-in data sets written in the real on-disk formats, for machines without the downloads.

`write_mnist` writes the four IDX files torchvision's MNIST and FashionMNIST read; `write_cifar10` writes the
pickled batches its CIFAR10 reads. The images are learnable (each class is a fixed random pattern plus noise),
so a short run shows the loss going down. The test suite and scripts/bench.py read them through the same code
as the real sets.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

NUM_CLASSES = 10


def class_images(num_samples: int, shape: tuple[int, ...], seed: int = 0,
                 split: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, *shape) and labels (N,): per class a random pattern (seeded by `seed`, so the same in
    every split), per image Gaussian noise on top (seeded by `seed` and `split`). The patterns are blocks of 4x4
    pixels, mirror-symmetric, so that small shifts and horizontal flips (CIFAR's augmentation) keep the class."""
    *channels, height, width = shape
    coarse = np.random.default_rng(seed).uniform(0, 255, (NUM_CLASSES, *channels, height // 4, width // 4))
    coarse = (coarse + coarse[..., ::-1]) / 2
    patterns = coarse.repeat(4, axis=-2).repeat(4, axis=-1)  # (classes, *shape)
    rng = np.random.default_rng([seed, split])
    labels = rng.permutation(np.arange(num_samples) % NUM_CLASSES)
    noise = rng.normal(0, 60, (num_samples, *shape))
    return np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic 0x0000_08_<ndim>, each dimension as a big-endian int32, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: str | Path, name: str = "MNIST", train: int = 600, test: int = 100, seed: int = 0) -> Path:
    """ROOT/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with 28x28 grey images; returns the folder."""
    folder = Path(root) / name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (prefix, count) in enumerate((("train", train), ("t10k", test))):
        images, labels = class_images(count, (28, 28), seed, split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def write_cifar10(root: str | Path, train: int = 500, test: int = 100, seed: int = 0) -> Path:
    """ROOT/cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta: dicts of 'data' (N, 3072)
    uint8 rows (the red plane, then green, then blue, each row by row) and 'labels'; returns the folder."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = class_images(train + test, (3, 32, 32), seed)
    batches = np.array_split(np.arange(train), 5)
    for number, index in enumerate(batches, start=1):
        _pickle(folder / f"data_batch_{number}", {"data": images[index].reshape(len(index), -1),
                                                  "labels": labels[index].tolist()})
    _pickle(folder / "test_batch", {"data": images[train:].reshape(test, -1), "labels": labels[train:].tolist()})
    _pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck"]})
    return folder


def _pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file)
