"""curves.png: learning curves against epoch (the train and val loss, the val metrics, the learning rate) of one
run, or of several runs on one figure to compare them.

matplotlib is imported inside the functions: it takes about half a second, which `train --help` and
`train-report` should not wait for. The figures are matplotlib.figure.Figure objects, not pyplot's: no display
and no global state, so drawing works on a headless node and leaves nothing behind in a long-lived process.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Rows = Sequence[Mapping[str, float]]
"""metrics.csv's rows: epoch, step, lr, train_loss, val_loss, the val metrics, seconds."""


@dataclass(frozen=True)
class Panel:
    column: str
    title: str
    ylabel: str
    nonnegative: bool = False
    """A loss or a learning rate: drawn from 0, or on a log scale where it spans DECADES (a loss early in
    training, a decayed learning rate), whose later values would lie flat along the bottom of a linear one."""


LOSS = Panel("val_loss", "Loss", "loss", nonnegative=True)
TRAIN_LOSS = Panel("train_loss", "Training loss", "loss", nonnegative=True)
VAL_LOSS = Panel("val_loss", "Validation loss", "loss", nonnegative=True)
METRICS = (Panel("val_accuracy", "Validation accuracy", "accuracy"), Panel("val_r2", "Validation R²", "R²"),
           Panel("val_rmse", "Validation RMSE", "RMSE (data units)"))
"""The val metrics drawn, where the rows have them. val_mse is left out: it is the square of val_rmse."""
LEARNING_RATE = Panel("lr", "Learning rate", "learning rate", nonnegative=True)
DECADES = 100
"""How many times its smallest positive value the largest must be for a log scale."""
PANEL_INCHES = (4.2, 3.2)
DPI = 100
BEST_EPOCH_LINE = {"color": "0.4", "linestyle": ":", "linewidth": 1.2}
LEGEND_INCHES_PER_CHARACTER, LEGEND_ROW_INCHES = 0.07, 0.22
"""Roughly, at the legend's small font."""
LINE_STYLES = ("-", "--", ":")
"""With more runs than the 10 colours of matplotlib's cycle, the next 10 are dashed, then dotted."""


def run_title(config: Mapping[str, Any]) -> str:
    """What a run trained, from its resolved config: "digits: MLP, Adam lr 0.001, StepLR"."""
    def name(group: str) -> str:  # the _target_'s own name: trainer.models.MLP -> MLP
        return ((config.get(group) or {}).get("_target_") or "").rpartition(".")[2]

    data, lr = config.get("data") or {}, (config.get("optimizer") or {}).get("lr")
    optimizer = name("optimizer") + (f" lr {lr}" if lr is not None else "")
    trained = ", ".join(part for part in (name("model"), optimizer, name("scheduler")) if part)
    return f"{Path(data['path']).name if data.get('path') else name('data')}: {trained}"


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """metrics.csv's rows as numbers. A run still writing the file may have left its last line cut short: the
    rows end before it. Raises ValueError, naming the file, for one that is not the metrics.csv train writes: not
    UTF-8 CSV, or without an epoch column."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is not None and "epoch" not in reader.fieldnames:  # (None: an empty file)
                raise ValueError(f"{path}: not the metrics.csv train writes (it has no epoch column)")
            for row in reader:
                try:
                    rows.append({name: float(value) for name, value in row.items()})
                except (TypeError, ValueError):  # a field missing (None) or cut mid-number
                    break
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not the metrics.csv train writes ({error})") from None
    return rows


def draw_run_curves(rows: Rows, path: Path, best_epoch: Optional[int] = None, title: str = "") -> Figure:
    """One run's curves in panels: loss (train and val), each val metric, the learning rate; the best epoch
    marked on each. Written to `path` as PNG; returns the figure."""
    metrics = _metric_panels([rows])
    figure, axes = _figure([LOSS, *metrics, LEARNING_RATE], title)
    epochs = _column(rows, "epoch")
    axes[0].plot(epochs, _column(rows, "train_loss"), color="C0", label="train")
    axes[0].plot(epochs, _column(rows, "val_loss"), color="C1", label="validation")
    _scale(axes[0], LOSS, _column(rows, "train_loss") + _column(rows, "val_loss"))
    for panel_axes, panel in zip(axes[1:], [*metrics, LEARNING_RATE]):
        panel_axes.plot(epochs, _column(rows, panel.column), color="C2" if panel is LEARNING_RATE else "C1")
        _scale(panel_axes, panel, _column(rows, panel.column))
    best = _row_at(rows, best_epoch)
    if best is not None:
        for panel_axes in axes:
            panel_axes.axvline(best_epoch, **BEST_EPOCH_LINE)
        for panel_axes, panel in zip(axes, [LOSS, *metrics]):
            panel_axes.scatter(best_epoch, best[panel.column], color="C1", zorder=3,
                               label=f"best epoch {best_epoch}: {best[panel.column]:.4g}")
    for panel_axes in axes[:-1] if best is not None else axes[:1]:  # the panels with labelled lines or points
        panel_axes.legend(loc="best", fontsize="small")
    save_png(figure, path)
    return figure


def draw_runs_curves(runs: Mapping[str, Rows], path: Path,
                     best_epochs: Optional[Mapping[str, Optional[int]]] = None, title: str = "") -> Figure:
    """Several runs (each with a row at least) on one figure, one colour each, labelled in the legend: panels for
    the training loss, the validation loss, each val metric and the learning rate; each run's best epoch
    (`best_epochs`, by label) marked on its validation curves. Written to `path` as PNG; returns the figure."""
    from matplotlib.lines import Line2D

    panels = [TRAIN_LOSS, VAL_LOSS, *_metric_panels(runs.values()), LEARNING_RATE]
    figure, axes = _figure(panels, title)
    marked = False
    for index, (label, rows) in enumerate(runs.items()):
        style = {"color": f"C{index % 10}", "linestyle": LINE_STYLES[index // 10 % len(LINE_STYLES)]}
        best = _row_at(rows, (best_epochs or {}).get(label))
        marked |= best is not None
        for panel_axes, panel in zip(axes, panels):
            if panel.column in rows[0]:
                panel_axes.plot(_column(rows, "epoch"), _column(rows, panel.column), label=label, **style)
            if best is not None and panel.column.startswith("val_") and panel.column in best:
                panel_axes.scatter(best["epoch"], best[panel.column], color=style["color"], zorder=3)
    for panel_axes, panel in zip(axes, panels):
        _scale(panel_axes, panel, [value for rows in runs.values() for value in _column(rows, panel.column)])
    handles = list(axes[0].get_lines())
    if marked:
        handles.append(Line2D([], [], marker="o", linestyle="none", color="0.3", label="best epoch"))
    _legend_below(figure, handles)
    save_png(figure, path)
    return figure


def _legend_below(figure: Figure, handles: list) -> None:
    """The runs' legend under the panels, in as many columns as the labels fit across the figure; the figure
    grows by the legend's height, so the panels keep their size however many runs there are."""
    width = figure.get_figwidth()
    label_inches = 0.6 + LEGEND_INCHES_PER_CHARACTER * max(len(handle.get_label()) for handle in handles)
    columns = max(1, min(len(handles), int(width // label_inches)))
    figure.set_figheight(figure.get_figheight() + LEGEND_ROW_INCHES * math.ceil(len(handles) / columns))
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize="small", frameon=False)


def _metric_panels(runs: Iterable[Rows]) -> list[Panel]:
    """The METRICS panels that at least one run has a column for."""
    columns = {name for rows in runs for name in rows[0]}
    return [panel for panel in METRICS if panel.column in columns]


def _column(rows: Rows, name: str) -> list[float]:
    """One column's values; nan where it is missing or not finite, which leaves a gap in the line (a diverged
    epoch's inf would otherwise stretch the axis out of sight)."""
    return [row[name] if math.isfinite(row.get(name, math.nan)) else math.nan for row in rows]


def _row_at(rows: Rows, epoch: Optional[int]) -> Optional[Mapping[str, float]]:
    return next((row for row in rows if row["epoch"] == epoch), None)


def _figure(panels: list[Panel], title: str) -> tuple[Figure, list[Axes]]:
    """A figure with one axes per panel, titled and labelled: one row of up to 3, 2 by 2 for 4, rows of 3 for
    more."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).flatten()
    for unused in grid[len(panels):]:
        unused.remove()
    for panel_axes, panel in zip(grid, panels):
        panel_axes.set(title=panel.title, xlabel="epoch", ylabel=panel.ylabel)
        panel_axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        panel_axes.grid(True, which="major", alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure, list(grid[:len(panels)])


def _scale(axes: Axes, panel: Panel, values: list[float]) -> None:
    """A log y-axis where the panel's values span DECADES or more; otherwise a linear one whose tick labels are
    the values themselves (matplotlib would write a flat learning rate of 0.001 as offsets from it)."""
    positive = [value for value in values if value > 0]  # nan is not
    if panel.nonnegative and positive and max(positive) >= DECADES * min(positive):
        axes.set_yscale("log", nonpositive="mask")
        axes.grid(True, which="minor", alpha=0.1)
        return
    axes.ticklabel_format(axis="y", useOffset=False)
    if panel.nonnegative:  # from 0, so that a flat learning rate does not look like a noisy one
        axes.set_ylim(bottom=0)


def save_png(figure: Figure, path: Path) -> None:
    """Write the PNG beside `path` and rename it into place, so that a reader never finds half a picture."""
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, format="png")
    os.replace(partial, path)
