import functools
import sys

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config, options, write_image_folder
from trainer.config import ConfigError
from trainer.data import Arrays, RowsOf, build, build_data
from trainer.data.build import PIPELINE_KEYS

DATA = options("data")
# What each data option must come out as: task, input_shape, num_classes.
EXPECTED = {
    "breast_cancer": ("binary", (30,), 2),
    "circles": ("binary", (2,), 2),
    "diabetes": ("regression", (10,), None),
    "digits": ("multiclass", (1, 8, 8), 10),
    "moons": ("binary", (2,), 2),
    "regression": ("regression", (3,), None),
    "sine": ("regression", (1,), None),
    "spiral": ("binary", (2,), 2),
    "xor": ("binary", (2,), 2),
    "csv": ("multiclass", (4,), 3),
    "parquet": ("multiclass", (4,), 3),
    "mnist": ("multiclass", (1, 28, 28), 10),
    "fashion_mnist": ("multiclass", (1, 28, 28), 10),
    "cifar10": ("multiclass", (3, 32, 32), 10),
    "image_folder": ("multiclass", (3, 8, 8), 3),
}
IMAGE_SETS = ["cifar10", "fashion_mnist", "mnist"]
"""uint8 images with their own test split (tests/unit/data/test_images.py covers what is special about them)."""
IMAGE_FOLDERS = ["image_folder"]
"""uint8 images held out at random as a table's rows are (tests/unit/data/test_image_folder.py: the rest)."""
OWN_POINTS = ["sine"]
"""A function's values at the points its config names, a split each, unstandardised (test_synthetic covers it)."""
TABULAR = [name for name in DATA if name not in IMAGE_SETS + IMAGE_FOLDERS + OWN_POINTS]
CLASSIFICATION = [name for name in DATA if EXPECTED.get(name, ("unknown",))[0] != "regression"]
REGRESSION = [name for name in DATA if EXPECTED.get(name, ("unknown",))[0] == "regression" and name not in OWN_POINTS]


@functools.lru_cache(maxsize=None)
def splits(option: str, *overrides: str):
    """build_data for `train data=OPTION OVERRIDES...` (cached: the tests only read the tensors)."""
    return build_data(compose_config(f"data={option}", *overrides).data)


def raw_splits(option: str, *overrides: str):
    """The same split without standardisation: the loader's values, cast to float32."""
    return splits(option, "data.standardize=false", *overrides)


@functools.lru_cache(maxsize=None)
def loader_arrays(option: str) -> Arrays:
    """What the option's loader itself returns, before any splitting."""
    cfg = compose_config(f"data={option}").data
    return instantiate(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in PIPELINE_KEYS]))


def sorted_rows(x, y) -> np.ndarray:
    """One row per sample (features, then targets), sorted: equal arrays mean the same multiset of samples."""
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    if y.dtype.kind not in "iufb":  # text labels: their class indices, in sorted order as build_data numbers them
        y = np.unique(y, return_inverse=True)[1]
    rows = np.concatenate([x.reshape(len(x), -1).astype(np.float64),
                           y.reshape(len(y), -1).astype(np.float32).astype(np.float64)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def parts(data):
    return {"train": data.train, "val": data.val, "test": data.test}


def test_every_data_option_has_expectations():
    assert sorted(EXPECTED) == DATA


@pytest.mark.parametrize("option", TABULAR + IMAGE_FOLDERS)
@pytest.mark.parametrize("val_fraction, test_fraction", [(0.1, 0.2), (0.25, 0.15)])
def test_splits_are_disjoint_cover_all_samples_with_the_configured_fractions(option, val_fraction, test_fraction):
    default = (val_fraction, test_fraction) == (0.1, 0.2)  # train.yaml's: reuse the cached split
    data = raw_splits(option) if default else raw_splits(
        option, f"data.val_fraction={val_fraction}", f"data.test_fraction={test_fraction}")
    arrays = loader_arrays(option)
    n = len(arrays.x)
    sizes = {name: len(x) for name, (x, _) in parts(data).items()}
    assert sum(sizes.values()) == n
    assert abs(sizes["val"] - val_fraction * n) <= 1
    assert abs(sizes["test"] - test_fraction * n) <= 1
    # Every sample of the loader lands in exactly one split (as a multiset of (features, target) rows).
    all_x = torch.cat([data.train[0], data.val[0], data.test[0]]).numpy()
    all_y = torch.cat([data.train[1], data.val[1], data.test[1]]).numpy()
    np.testing.assert_array_equal(sorted_rows(all_x, all_y), sorted_rows(arrays.x, arrays.y))


@pytest.mark.parametrize("option", CLASSIFICATION)
def test_classification_splits_are_stratified(option):
    data = splits(option)
    ours = {name: part for name, part in parts(data).items() if not (name == "test" and option in IMAGE_SETS)}
    labels = torch.cat([y for _, y in ours.values()])
    whole = torch.bincount(labels, minlength=data.description.num_classes).double() / len(labels)
    for name, (_, y) in ours.items():
        share = torch.bincount(y, minlength=data.description.num_classes).double() / len(y)
        assert torch.allclose(share, whole, atol=0.02), f"{name}: {share.tolist()} vs whole {whole.tolist()}"


@pytest.mark.parametrize("option", TABULAR)
def test_standardisation_gives_train_features_zero_mean_and_unit_std(option):
    x_train = splits(option).train[0].flatten(1).double()
    raw_std = raw_splits(option).train[0].flatten(1).double().std(dim=0, unbiased=False)
    assert torch.allclose(x_train.mean(dim=0), torch.zeros(x_train.shape[1], dtype=torch.float64), atol=1e-4)
    std = x_train.std(dim=0, unbiased=False)
    varying = raw_std > 0
    assert varying.any()
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-4)
    assert torch.all(x_train[:, ~varying] == 0), "a constant feature should stay 0, not become nan or inf"


@pytest.mark.parametrize("option", TABULAR)
def test_val_and_test_features_use_the_train_statistics(option):
    raw, data = raw_splits(option), splits(option)
    raw_train = raw.train[0].double()
    mean, std = raw_train.mean(dim=0), raw_train.std(dim=0, unbiased=False)
    std[std == 0] = 1.0
    for name in ("val", "test"):
        expected = (getattr(raw, name)[0].double() - mean) / std
        actual = getattr(data, name)[0].double()
        assert torch.allclose(actual, expected, atol=1e-4), name
    # Fitted on val itself its mean would be 0: with train's statistics it is not exactly.
    assert data.val[0].double().mean(dim=0).abs().max() > 1e-3


@pytest.mark.parametrize("option", CLASSIFICATION)
def test_classification_labels_are_int64_class_indices_untouched_by_standardisation(option):
    data, raw = splits(option), raw_splits(option)
    for name in ("train", "val", "test"):
        labels = getattr(data, name)[1]
        assert labels.dtype == torch.int64 and labels.dim() == 1
        assert torch.equal(labels, getattr(raw, name)[1])
        assert getattr(data, name)[0].dtype == (torch.uint8 if option in IMAGE_SETS + IMAGE_FOLDERS else torch.float32)


@pytest.mark.parametrize("option", REGRESSION)
def test_regression_targets_are_standardised_on_train_and_target_std_is_the_raw_train_std(option):
    data, raw = splits(option), raw_splits(option)
    raw_y = raw.train[1].double()
    assert raw_y.dim() == 2 and data.train[1].dtype == torch.float32
    mean, std = raw_y.mean(dim=0), raw_y.std(dim=0, unbiased=False)
    described = data.description
    assert described.target_std is not None and described.target_std.shape == (described.num_targets,)
    assert torch.allclose(described.target_std.double(), std, rtol=1e-5)
    y_train = data.train[1].double()
    assert torch.allclose(y_train.mean(dim=0), torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(y_train.std(dim=0, unbiased=False), torch.ones_like(std), atol=1e-4)
    for name in ("val", "test"):
        expected = (getattr(raw, name)[1].double() - mean) / std
        assert torch.allclose(getattr(data, name)[1].double(), expected, atol=1e-4), name


@pytest.mark.parametrize("option", DATA)
def test_same_split_seed_gives_the_same_split(option):
    first = splits(option)
    again = build_data(compose_config(f"data={option}").data)  # built afresh, not from the cache
    for (x1, y1), (x2, y2) in zip(parts(first).values(), parts(again).values()):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("option", [name for name in DATA if name not in OWN_POINTS])  # (theirs hold nothing out)
def test_another_split_seed_holds_out_other_samples(option):
    seed0 = raw_splits(option)
    seed1 = raw_splits(option, "data.split_seed=1")
    assert not np.array_equal(sorted_rows(*seed0.val), sorted_rows(*seed1.val))
    if option in IMAGE_SETS:  # the set's own test split, whatever the seed
        assert torch.equal(seed0.test[0], seed1.test[0])
    else:
        assert not np.array_equal(sorted_rows(*seed0.test), sorted_rows(*seed1.test))


@pytest.mark.parametrize("option", DATA)
def test_task_input_shape_and_num_classes(option):
    task, input_shape, num_classes = EXPECTED[option]
    data = splits(option)
    described = data.description
    assert (described.task, described.input_shape, described.num_classes) == (task, input_shape, num_classes)
    assert tuple(data.train[0].shape[1:]) == input_shape
    if task == "regression":
        standardized = option not in OWN_POINTS
        assert data.description.num_targets == 1 and (data.description.target_std is not None) == standardized
    else:
        assert data.description.target_std is None
        assert int(torch.cat([data.train[1], data.val[1], data.test[1]]).max()) == num_classes - 1


def test_regression_without_standardisation_has_no_target_std():
    assert raw_splits("regression").description.target_std is None


def test_built_regression_split_keeps_each_target_with_its_features():
    data = build_data(compose_config("data=regression", "data.noise=0", "data.n_samples=500",
                                     "data.standardize=false").data)
    for name, (x, y) in parts(data).items():
        x = x.double()
        formula = x[:, 0] ** 2 + 2 * x[:, 1] - 0.5 * x[:, 2]
        assert torch.allclose(y[:, 0].double(), formula, atol=1e-4), name


def test_a_binary_task_on_labels_with_more_classes_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        build_data(compose_config("data.task=binary").data)
    assert str(error.value) == "data.task: got 'binary', expected multiclass: the labels have 10 classes"


def test_arrays_rejects_features_and_targets_of_different_lengths():
    with pytest.raises(ValueError, match=r"x has 3 samples but y has 2"):
        Arrays(x=np.zeros((3, 2)), y=np.zeros(2))



def test_a_memory_mapped_set_of_more_than_half_the_available_memory_is_refused_for_the_device_pipeline(tmp_path,
                                                                                                      monkeypatch):
    folder = write_image_folder(tmp_path / "images", per_class=10)  # 30 images of 3x8x8: 5,760 bytes
    monkeypatch.setattr(build, "available_memory", lambda: 10_000)
    settings = ("data=image_folder", f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ConfigError) as refused:
        build_data(compose_config(*settings).data)
    assert str(refused.value).startswith("data.pipeline: got 'device', expected dataloader: the set's 0.0 GB are "
                                         "more than half of the 0.0 GB of memory available")
    served_from_the_cache = build_data(compose_config(*settings, "data.pipeline=dataloader").data)
    assert isinstance(served_from_the_cache.train[0], RowsOf)
    monkeypatch.setattr(build, "available_memory", lambda: 20_000)
    assert isinstance(build_data(compose_config(*settings).data).train[0], torch.Tensor)


def test_the_available_memory_is_a_number_of_bytes_on_linux():
    available = build.available_memory()
    assert available is None if not sys.platform.startswith("linux") else 0 < available < 2**50
