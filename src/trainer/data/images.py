"""The image sets the tutorials train on, read by torchvision's own dataset classes.

Each set is read once into uint8 arrays (N, C, H, W), with its own train and test split. Normalisation and
augmentation happen later, per batch, on the training device (trainer.data.transforms).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from trainer.config import ConfigError
from trainer.data.build import Arrays


def mnist(root: str, download: bool = True) -> Arrays:
    """MNIST: 60,000 train and 10,000 test 28x28 grey handwritten digits, 10 classes."""
    return _read("MNIST", root, download)


def fashion_mnist(root: str, download: bool = True) -> Arrays:
    """Fashion-MNIST: MNIST's shapes and sizes, with 10 kinds of clothing instead of digits."""
    return _read("FashionMNIST", root, download)


def cifar10(root: str, download: bool = True) -> Arrays:
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour photos, 10 classes (airplane ... truck)."""
    return _read("CIFAR10", root, download)


def _read(name: str, root: str, download: bool) -> Arrays:
    import torchvision

    dataset_class = getattr(torchvision.datasets, name)
    try:
        train = dataset_class(root, train=True, download=download)
        test = dataset_class(root, train=False, download=download)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        folder, files = expected_files(dataset_class, root)
        listed = f"{folder}/{{{','.join(files)}}}"
        # torchvision says "Dataset not found", lists every mirror it tried (MNIST), or lets the URLError through
        # (CIFAR); the last line has the cause. Files that are all there but fail to read are damaged.
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        if all((folder / file).is_file() for file in files):
            allowed = (f"a folder holding readable {listed} (reading them failed: {reason}); remove the damaged "
                       f"files to download them again")
        else:
            allowed = (f"a folder holding {listed} ({reason if download else 'data.download is false'}); download "
                       f"it where there is a network, or set data.root or DATA_DIR to a folder that has it")
        raise ConfigError("data.root", root, allowed) from None
    test_part = Arrays(x=_channels_first(test.data), y=np.asarray(test.targets))
    return Arrays(x=_channels_first(train.data), y=np.asarray(train.targets), test=test_part,
                  class_names=list(train.classes))


def expected_files(dataset_class: type, root: str) -> tuple[Path, list[str]]:
    """Where torchvision looks for a set's files under root (as an absolute path), and their names."""
    if hasattr(dataset_class, "resources"):  # the MNIST family: root/<class name>/raw/<unzipped files>
        folder = Path(root) / dataset_class.__name__ / "raw"
        files = [Path(url).name.removesuffix(".gz") for url, _ in dataset_class.resources]
    else:  # CIFAR: root/<base_folder>/<pickled batches>
        folder = Path(root) / dataset_class.base_folder
        files = [file for file, _ in dataset_class.train_list + dataset_class.test_list]
        files.append(dataset_class.meta["filename"])
    return folder.resolve(), files


def _channels_first(images) -> np.ndarray:
    """torchvision's (N, H, W) grey tensors or (N, H, W, C) colour arrays -> uint8 (N, C, H, W)."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images[:, None, :, :]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
