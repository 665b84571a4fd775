"""decision_boundary.png: for a classifier of two features (moons, circles, spiral, xor, a table of two columns),
the class the model predicts at every point of the plane, with the training and test points on it: the picture the
TensorFlow Playground made famous. The plane is in the data's own units: standardised features are turned back.

matplotlib is imported inside the function that draws, as in curves.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainer.data import DataDescription
from trainer.observe.curves import DPI, save_png
from trainer.training.metrics import class_probabilities, predicted_classes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GRID_POINTS = 200
"""Points along each side of the plane's grid."""
MARGIN = 0.1
"""The grid reaches this fraction of the points' extent beyond them on every side."""
FIGURE_INCHES = (5.6, 5.0)
COLOURS = ("#f59322", "#0877bd", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
"""The Playground's orange and blue for the first two classes, then matplotlib's."""


def draws_a_plane(description: DataDescription) -> bool:
    """A classifier whose samples are two numbers: each sample is a point of the plane."""
    return description.task != "regression" and tuple(description.input_shape) == (2,)


@dataclass
class PlanePredictions:
    """The model's predicted class and its probability at every point of a grid over the plane, in the data's
    units: `classes[i, j]` is at (xs[j], ys[i])."""

    xs: np.ndarray
    ys: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray


@torch.no_grad()
def predict_plane(model: torch.nn.Module, description: DataDescription, points: np.ndarray,
                  device: torch.device) -> PlanePredictions:
    """The model's class over a grid covering `points` (N, 2) in the data's units, with MARGIN around them. Each
    grid point is standardised as the training samples were; one output is a binary logit, more are class logits."""
    low, high = points.min(axis=0), points.max(axis=0)
    # A feature that never varies (a constant column) still gets a side of its own size, not one of zero width.
    margin = MARGIN * np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    xs, ys = (np.linspace(low[k] - margin[k], high[k] + margin[k], GRID_POINTS) for k in range(2))
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)  # row by row: y outer, x inner
    samples = description.features(grid) if description.features is not None else grid
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        output = model(torch.from_numpy(samples).to(device)).float().cpu()  # (G*G, num_outputs)
    model.train(was_training)
    classes, confidence = predicted_classes(output), class_probabilities(output).max(dim=1).values
    shape = (GRID_POINTS, GRID_POINTS)
    return PlanePredictions(xs, ys, classes.reshape(shape).numpy(), confidence.reshape(shape).numpy())


def in_data_units(x: torch.Tensor, description: DataDescription) -> np.ndarray:
    """Samples as the model saw them (standardised, where they were) back in the data's units: (N, 2)."""
    values = x.detach().cpu().numpy()
    return description.features.inverse(values) if description.features is not None else values


def draw(model: torch.nn.Module, description: DataDescription, train: tuple[torch.Tensor, torch.Tensor],
         test: tuple[torch.Tensor, torch.Tensor], path: Path, device: torch.device, title: str = "") -> Figure:
    """The predicted class over the plane, paler where the model is less sure, and the training points (circles)
    and test points (triangles) in the colour of their true class. Written to `path` as PNG; returns the figure."""
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    points = {"train": in_data_units(train[0], description), "test": in_data_units(test[0], description)}
    labels = {"train": train[1].cpu().numpy(), "test": test[1].cpu().numpy()}
    plane = predict_plane(model, description, np.concatenate(list(points.values())), device)
    colours = np.array([to_rgb(COLOURS[k % len(COLOURS)]) for k in range(max(2, description.num_classes or 2))])
    # From white at chance (1 / classes) to the class's colour where the model is certain, as the Playground shades.
    chance = 1 / len(colours)
    strength = ((plane.confidence - chance) / (1 - chance)).clip(0, 1)[..., None] * 0.6
    image = 1 - strength * (1 - colours[plane.classes])  # (G, G, 3)

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    axes = figure.subplots()
    extent = (plane.xs[0], plane.xs[-1], plane.ys[0], plane.ys[-1])
    axes.imshow(image, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
    for split, marker, size in (("train", "o", 14), ("test", "^", 22)):
        axes.scatter(*points[split].T, c=colours[labels[split]], marker=marker, s=size, edgecolors="white",
                     linewidths=0.5, label=split)
    names = description.class_names or [str(k) for k in range(len(colours))]
    handles = [Line2D([], [], marker="s", linestyle="none", color=colours[k], label=f"class {name}")
               for k, name in enumerate(names)]
    handles += [Line2D([], [], marker=m, linestyle="none", color="0.3", label=split)
                for split, m in (("train", "o"), ("test", "^"))]
    axes.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    feature_names = description.feature_names or ["x0", "x1"]
    axes.set(xlabel=feature_names[0], ylabel=feature_names[1], title=title or "Decision boundary")
    save_png(figure, path)
    return figure

