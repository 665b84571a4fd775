"""The image sets: stand-ins in the real file formats, read by torchvision; their split, statistics and runs.
(tests/e2e/test_train_data.py runs `train` on them.)"""

from __future__ import annotations

import csv
import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from conftest import compose_config
from trainer.config import ConfigError
from trainer.data import build_data, images
from trainer.data.formats import class_images, write_cifar10, write_mnist
from trainer.run import train as train_in_process

TRAIN, TEST = 50, 20
"""Samples in the small stand-ins a test writes for itself."""

MNIST_FAMILY = [("MNIST", images.mnist, 0), ("FashionMNIST", images.fashion_mnist, 1)]


def mnist_expected(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """What write_mnist(train=TRAIN, test=TEST, seed=seed) writes: (train images, labels), (test images, labels)."""
    return class_images(TRAIN, (28, 28), seed, 0), class_images(TEST, (28, 28), seed, 1)


def cifar_expected() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """write_cifar10 draws train and test as one set of (N, 3, 32, 32) images: train first."""
    x, y = class_images(TRAIN + TEST, (3, 32, 32), 0)
    return (x[:TRAIN], y[:TRAIN]), (x[TRAIN:], y[TRAIN:])


def sample_bytes(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> list[bytes]:
    """Each sample (image, label) as bytes, sorted: equal lists mean the same multiset of samples."""
    x, y = np.asarray(x), np.asarray(y).astype(np.int64)
    return sorted(image.tobytes() + label.tobytes() for image, label in zip(x.reshape(len(x), -1), y))


# --- the stand-in files, read by torchvision ----------------------------------------------------------------------

@pytest.mark.parametrize("name, _, seed", MNIST_FAMILY, ids=["MNIST", "FashionMNIST"])
def test_write_mnist_files_are_read_by_torchvision_with_the_exact_pixels_and_labels(tmp_path, name, _, seed):
    write_mnist(tmp_path, name=name, train=TRAIN, test=TEST, seed=seed)
    dataset_class = getattr(torchvision.datasets, name)
    for train, (x, y) in zip((True, False), mnist_expected(seed)):
        dataset = dataset_class(str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(dataset.data.numpy(), x)
        np.testing.assert_array_equal(dataset.targets.numpy(), y)
    assert len(np.unique(mnist_expected(seed)[0][1])) == 10


def test_write_cifar10_files_are_read_by_torchvision_as_the_same_images_in_hwc(tmp_path):
    write_cifar10(tmp_path, train=TRAIN, test=TEST)
    for train, (x, y) in zip((True, False), cifar_expected()):
        dataset = torchvision.datasets.CIFAR10(str(tmp_path), train=train, download=False)
        assert dataset.data.shape == (len(x), 32, 32, 3)
        np.testing.assert_array_equal(dataset.data, x.transpose(0, 2, 3, 1))
        assert dataset.targets == y.tolist()
    assert dataset.classes[0] == "airplane"


# --- trainer.data.images --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, loader, seed", MNIST_FAMILY, ids=["mnist", "fashion_mnist"])
def test_mnist_loaders_return_uint8_nchw_with_the_set_s_own_test_part(tmp_path, name, loader, seed):
    write_mnist(tmp_path, name=name, train=TRAIN, test=TEST, seed=seed)
    arrays = loader(str(tmp_path), download=False)
    for part, (x, y) in zip((arrays, arrays.test), mnist_expected(seed)):
        assert part.x.dtype == np.uint8 and part.x.shape == (len(x), 1, 28, 28)
        np.testing.assert_array_equal(part.x[:, 0], x)
        np.testing.assert_array_equal(part.y, y)
    assert arrays.test.test is None


def test_cifar10_loader_returns_uint8_nchw_with_the_set_s_own_test_part(tmp_path):
    write_cifar10(tmp_path, train=TRAIN, test=TEST)
    arrays = images.cifar10(str(tmp_path), download=False)
    for part, (x, y) in zip((arrays, arrays.test), cifar_expected()):
        assert part.x.dtype == np.uint8 and part.x.shape == (len(x), 3, 32, 32)
        assert part.x.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(part.x, x)
        np.testing.assert_array_equal(part.y, y)


# --- build_data on the session's stand-ins (DATA_DIR) ---------------------------------------------------------------

@pytest.mark.parametrize("option, loader", [("mnist", images.mnist), ("cifar10", images.cifar10)])
def test_image_split_keeps_the_test_file_and_holds_out_val_stratified_from_the_train_file(option, loader,
                                                                                          offline_data_sets):
    data = build_data(compose_config(f"data={option}").data)
    arrays = loader(str(offline_data_sets), download=False)
    for x, _ in (data.train, data.val, data.test):
        assert x.dtype == torch.uint8
    assert torch.equal(data.test[0], torch.from_numpy(arrays.test.x))
    assert torch.equal(data.test[1], torch.from_numpy(arrays.test.y).long())
    # train + val: exactly the train file's samples, val 10% of each class.
    together = sample_bytes(torch.cat([data.train[0], data.val[0]]), torch.cat([data.train[1], data.val[1]]))
    assert together == sample_bytes(arrays.x, arrays.y)
    per_class = np.bincount(arrays.y, minlength=10)
    val_per_class = torch.bincount(data.val[1], minlength=10).numpy()
    np.testing.assert_array_equal(val_per_class, np.round(0.1 * per_class).astype(int))
    assert len(data.val[0]) == round(0.1 * len(arrays.x))


@pytest.mark.parametrize("option, channels", [("mnist", 1), ("cifar10", 3)])
def test_normalize_has_the_train_split_s_per_channel_statistics(option, channels):
    data = build_data(compose_config(f"data={option}").data)
    pixels = data.train[0].double().transpose(0, 1).reshape(channels, -1)  # (C, N*H*W)
    assert data.description.pixels.mean.shape == data.description.pixels.std.shape == (channels,)
    assert torch.allclose(data.description.pixels.mean.double(), pixels.mean(dim=1), rtol=1e-6)
    assert torch.allclose(data.description.pixels.std.double(), pixels.std(dim=1, unbiased=False), rtol=1e-6)
    # Fitted on train only: the statistics of the whole train file differ.
    whole = torch.cat([data.train[0], data.val[0]]).double().transpose(0, 1).reshape(channels, -1)
    assert not torch.equal(data.description.pixels.mean, whole.mean(dim=1).float())


@pytest.mark.parametrize("option, channels", [("mnist", 1), ("cifar10", 3)])
def test_without_standardize_pixels_are_scaled_by_255(option, channels):
    data = build_data(compose_config(f"data={option}", "data.standardize=false").data)
    assert torch.equal(data.description.pixels.mean, torch.zeros(channels))
    assert torch.equal(data.description.pixels.std, torch.full((channels,), 255.0))
    assert data.train[0].dtype == torch.uint8


def test_a_test_fraction_on_a_set_with_its_own_test_split_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        build_data(compose_config("data=mnist", "data.test_fraction=0.2").data)
    assert str(error.value) == ("data.test_fraction: got 0.2, expected null: this set has its own test split, "
                                "and that is what the test uses")


# --- offline without the files --------------------------------------------------------------------------------------

MISSING = [
    (images.mnist, "MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                 "t10k-labels-idx1-ubyte"]),
    (images.fashion_mnist, "FashionMNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    (images.cifar10, "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]),
]


@pytest.mark.parametrize("loader, folder, files", MISSING, ids=["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_without_download_name_the_folder_and_files_torchvision_expects(tmp_path, loader, folder,
                                                                                      files):
    with pytest.raises(ConfigError) as error:
        loader(str(tmp_path), download=False)
    message = str(error.value)
    assert message.startswith(f"data.root: got {str(tmp_path)!r}, expected a folder holding "
                              f"{tmp_path.resolve()}/{folder}/{{"), message
    for file in files:
        assert file in message
    assert "(data.download is false)" in message


def no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


@pytest.mark.parametrize("loader, folder", [
    (images.mnist, "MNIST/raw"),
    (images.cifar10, "cifar-10-batches-py"),  # CIFAR10.download lets the URLError through unwrapped
], ids=["mnist", "cifar10"])
def test_a_failed_download_is_a_config_error_with_the_reason(tmp_path, monkeypatch, loader, folder):
    # mnist.py and cifar.py import the function by name: patch it where each one looks it up.
    for module in (torchvision.datasets.utils, torchvision.datasets.mnist, torchvision.datasets.cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", no_network)
    with pytest.raises(ConfigError) as error:
        loader(str(tmp_path), download=True)
    message = str(error.value)
    assert message.startswith("data.root: "), message
    assert f"{tmp_path.resolve()}/{folder}/" in message
    assert "no network" in message and "data.download is false" not in message


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("loader, folder, damaged", [
    (images.mnist, "MNIST/raw", "train-images-idx3-ubyte"),
    (images.cifar10, "cifar-10-batches-py", "data_batch_3"),
], ids=["mnist", "cifar10"])
def test_damaged_files_are_a_config_error_that_says_reading_failed(tmp_path, loader, folder, damaged, download):
    write_mnist(tmp_path)
    write_cifar10(tmp_path)
    path = tmp_path / folder / damaged
    path.write_bytes(path.read_bytes()[:3000])  # cut off, as by a download or copy that broke
    with pytest.raises(ConfigError) as error:
        loader(str(tmp_path), download=download)  # all files are there, so torchvision downloads nothing
    message = str(error.value)
    assert message.startswith(f"data.root: got {str(tmp_path)!r}, expected a folder holding readable "
                              f"{tmp_path.resolve()}/{folder}/{{"), message
    assert "(reading them failed: " in message and message.endswith("remove the damaged files to download "
                                                                     "them again"), message


# --- runs ---------------------------------------------------------------------------------------------------------

def test_train_a_resnet_on_cifar10_in_process(run_dir):
    cfg = compose_config("data=cifar10", "model=resnet", "model.channels=[8,16]", "model.blocks_per_stage=1",
                         "trainer.max_epochs=2", "trainer.device=cpu")
    train_in_process(cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert 0 <= summary["test"]["accuracy"] <= 1
    with (run_dir / "metrics.csv").open(newline="") as file:
        losses = [float(row["train_loss"]) for row in csv.DictReader(file)]
    assert len(losses) == 2 and losses[1] < losses[0]

