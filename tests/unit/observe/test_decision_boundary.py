"""decision_boundary.png: drawn by every run on a classifier of two features (trainer.curves), the model's class over
the plane in the data's units, the points where they are, each cell coloured by the class predicted there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from conftest import compose_config
from helpers.files import png_size
from trainer.data import DataDescription
from trainer.data.preprocessing import Standardize
from trainer.observe.curves import DPI
from trainer.observe.decision_boundary import COLOURS, FIGURE_INCHES, draw, draws_a_plane, predict_plane
from trainer.run import train

MEAN, STD = np.array([3.0, -1.0], dtype=np.float32), np.array([2.0, 5.0], dtype=np.float32)
"""The statistics of the made-up standardised features: a point x of the data is (x - MEAN) / STD to the model."""


def train_tiny(run_dir: Path, *overrides: str) -> None:
    train(compose_config("trainer.device=cpu", "model.hidden_sizes=[8]", "trainer.max_epochs=2", *overrides), run_dir)


def described(num_classes: int = 2, standardized: bool = True) -> DataDescription:
    return DataDescription(task="binary" if num_classes == 2 else "multiclass", input_shape=(2,),
                           num_classes=num_classes, class_names=[f"c{k}" for k in range(num_classes)],
                           feature_names=["a", "b"], features=Standardize(MEAN, STD) if standardized else None)


def linear(weight: list[list[float]], bias: list[float]) -> torch.nn.Linear:
    model = torch.nn.Linear(2, len(bias))
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight)), model.bias.copy_(torch.tensor(bias))
    return model


@pytest.mark.parametrize("data", ["moons", "circles", "spiral", "xor"])
def test_a_run_on_a_two_feature_set_draws_its_decision_boundary(run_dir, data):
    train_tiny(run_dir, f"data={data}", "trainer.curves=true")

    assert png_size(run_dir / "decision_boundary.png") == (FIGURE_INCHES[0] * DPI, FIGURE_INCHES[1] * DPI)
    assert not list(run_dir.glob("*.partial"))


@pytest.mark.parametrize("overrides", [("data=moons", "trainer.curves=false"),  # left out with curves.png
                                       ("data=digits", "trainer.curves=true"),  # 64 features
                                       ("data=regression", "trainer.curves=true")],  # no classes
                         ids=["curves=false", "digits", "regression"])
def test_no_decision_boundary_without_curves_or_a_plane_of_classes(run_dir, overrides):
    train_tiny(run_dir, *overrides)

    assert (run_dir / "summary.json").exists()
    assert not (run_dir / "decision_boundary.png").exists()
    assert (run_dir / "curves.png").exists() == ("trainer.curves=true" in overrides)


def test_only_a_classifier_of_two_features_draws_a_plane():
    assert draws_a_plane(described())
    assert not draws_a_plane(DataDescription(task="regression", input_shape=(2,), num_targets=1))
    assert not draws_a_plane(DataDescription(task="multiclass", input_shape=(1, 8, 8), num_classes=10))


@pytest.mark.parametrize("standardized", [True, False])
def test_the_plane_is_in_the_datas_units_and_each_point_has_the_models_class(standardized):
    # The logit is the first standardised feature: class 1 right of the data's mean (or of 0, unstandardised).
    model = linear([[1.0, 0.0]], [0.0])
    points = np.array([[-5.0, -20.0], [11.0, 14.0]], dtype=np.float32)

    plane = predict_plane(model, described(standardized=standardized), points, torch.device("cpu"))

    assert plane.xs[0] < -5.0 and plane.xs[-1] > 11.0 and plane.ys[0] < -20.0 and plane.ys[-1] > 14.0
    threshold = MEAN[0] if standardized else 0.0
    np.testing.assert_array_equal(plane.classes, np.broadcast_to(plane.xs > threshold, plane.classes.shape))


def test_several_classes_are_the_largest_logit():
    model = linear([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], [0.0, 0.0, 0.0])
    points = np.array([[-7.0, -30.0], [13.0, 30.0]], dtype=np.float32)

    plane = predict_plane(model, described(num_classes=3), points, torch.device("cpu"))

    grid = np.stack(np.meshgrid(plane.xs, plane.ys), axis=-1).reshape(-1, 2).astype(np.float32)
    expected = model(torch.from_numpy((grid - MEAN) / STD)).argmax(dim=1).reshape(plane.classes.shape)
    np.testing.assert_array_equal(plane.classes, expected.numpy())
    assert set(np.unique(plane.classes)) == {0, 1, 2}


def test_a_feature_that_never_varies_is_drawn_on_a_side_of_its_own_size(tmp_path, recwarn):
    model = linear([[1.0, 0.0]], [0.0])
    raw = np.array([[0.0, 1000.0], [1.0, 1000.0], [2.0, 1000.0]], dtype=np.float32)  # b: a constant column
    standardised = torch.from_numpy((raw - MEAN) / STD)
    labels = torch.tensor([0, 1, 1])

    figure = draw(model, described(), (standardised, labels), (standardised, labels), tmp_path / "plane.png",
                  torch.device("cpu"))

    bottom, top = figure.axes[0].get_ylim()
    assert bottom == pytest.approx(900.0) and top == pytest.approx(1100.0)
    assert [str(warning.message) for warning in recwarn] == []


def test_the_colour_under_each_training_point_is_the_class_the_model_predicts_there(tmp_path):
    model = linear([[50.0, 0.0]], [0.0])  # so sure away from x = MEAN[0] that the colour is the class's full shade
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.uniform(-4, 2, (20, 2)), rng.uniform(4, 10, (20, 2))]).astype(np.float32)
    standardised = torch.from_numpy((raw - MEAN) / STD)
    labels = torch.from_numpy((raw[:, 0] > 7).astype(np.int64))  # the true classes, unlike the model's here and there
    description = described()

    figure = draw(model, description, (standardised, labels), (standardised[:2], labels[:2]), tmp_path / "plane.png",
                  torch.device("cpu"))

    axes = figure.axes[0]
    np.testing.assert_allclose(axes.collections[0].get_offsets(), raw, rtol=1e-5)  # drawn where they are, in data units
    image = axes.images[0]
    pixels = np.asarray(image.get_array())  # (G, G, 3), row 0 at the bottom
    left, right, bottom, top = image.get_extent()
    predicted = (model(standardised)[:, 0] > 0).long().numpy()
    for (x, y), k in zip(raw, predicted):
        column = round((x - left) / (right - left) * (pixels.shape[1] - 1))
        row = round((y - bottom) / (top - bottom) * (pixels.shape[0] - 1))
        shade = 1 - 0.6 * (1 - np.array(to_rgb(COLOURS[k])))
        np.testing.assert_allclose(pixels[row, column], shade, atol=1e-3)
