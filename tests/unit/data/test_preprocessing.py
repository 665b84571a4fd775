"""What a run fits on its train split to prepare samples, and the description of its data every checkpoint keeps:
plain values that come back as the same float32 statistics."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision

from conftest import CSV_CLASSES, compose_config
from trainer.data import DataDescription, build_data
from trainer.data.preprocessing import Standardize


def test_standardize_centres_and_scales_each_feature_and_leaves_a_constant_one_at_0():
    train = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]], dtype=np.float32)  # column 1 constant
    scaling = Standardize.fitted(train)
    standardised = scaling(train)
    assert standardised.dtype == np.float32
    np.testing.assert_allclose(standardised.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(standardised.std(axis=0), [1, 0, 1], atol=1e-6)
    assert scaling.std[1] == 1.0
    np.testing.assert_allclose(scaling.inverse(standardised), train, rtol=1e-6)


def test_standardize_scales_values_whose_squares_overflow_float32():
    train = np.array([[0.0], [1e30], [2e30]], dtype=np.float32)
    np.testing.assert_allclose(Standardize.fitted(train)(train)[:, 0], [-1.2247449, 0, 1.2247449], rtol=1e-6)


# (the data option's overrides; the class names; the feature names, or None for images; which statistics it has)
SETS = [
    (["data=csv"], list(CSV_CLASSES), ["a", "b", "c", "d"], "features"),
    (["data=mnist"], torchvision.datasets.MNIST.classes, None, "pixels"),
    (["data=digits"], [str(digit) for digit in range(10)], [f"x{i}" for i in range(64)], "features"),
    (["data=regression", "data.n_samples=200"], None, ["x0", "x1", "x2"], "features targets"),
]


@pytest.mark.parametrize("overrides, class_names, feature_names, fitted", SETS,
                         ids=["csv", "mnist", "digits", "regression"])
def test_the_description_survives_a_weights_only_checkpoint_with_the_same_statistics(overrides, class_names,
                                                                                     feature_names, fitted):
    data = build_data(compose_config(*overrides).data)
    buffer = io.BytesIO()
    torch.save({"data": data.description.to_plain()}, buffer)
    buffer.seek(0)
    described = DataDescription.from_plain(torch.load(buffer, weights_only=True)["data"])

    assert (described.task, described.input_shape) == (data.description.task, data.description.input_shape)
    assert (described.class_names, described.feature_names) == (class_names, feature_names)
    assert [name for name in ("pixels", "features", "targets") if getattr(described, name) is not None] == \
        fitted.split()
    for restored, original in ((described.features, data.description.features),
                               (described.targets, data.description.targets)):
        if restored is not None:
            assert restored.mean.dtype == np.float32
            np.testing.assert_array_equal(restored.mean, original.mean)
            np.testing.assert_array_equal(restored.std, original.std)
    if described.pixels is not None:
        assert torch.equal(described.pixels.mean, data.description.pixels.mean)
        assert torch.equal(described.pixels.std, data.description.pixels.std)
