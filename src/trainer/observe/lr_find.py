"""trainer.find_lr's records: lr_find.csv (every step of the sweep) and lr_find.png (the loss against the learning
rate on a log axis, the suggested learning rate marked), and the line that tells the user which one to train with."""

from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from trainer.observe.curves import DPI, save_png
from trainer.observe.records import writing
from trainer.training.lr_finder import LrSweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_INCHES = (6.4, 4.2)
COLUMNS = ("step", "lr", "loss", "smoothed_loss")
SWEEP_KEYS = ("trainer.find_lr", "trainer.lr_find", "optimizer.lr")
"""Keys (and the keys under them) whose overrides the suggested command leaves out: the sweep's own, and the learning
rate it replaces."""


def write_csv(sweep: LrSweep, path: Path) -> None:
    with writing(path), path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sweep.rows())


def draw(sweep: LrSweep, path: Path, title: str = "") -> Figure:
    """The loss of each step and the smoothed loss against the learning rate (log axis), the suggestion marked.
    The y axis spans the losses from the lowest to the first smoothed one (and a little more): the diverging
    steps' losses, many times larger, would squash the part that matters. Written to `path` as PNG; returns the
    figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.plot(sweep.lrs, sweep.losses, color="C0", alpha=0.3, linewidth=1, label="loss of the step")
    axes.plot(sweep.lrs, sweep.smoothed, color="C0", label="smoothed loss")
    if sweep.lowest is not None:
        axes.scatter(sweep.lrs[sweep.lowest], sweep.smoothed[sweep.lowest], color="0.3", zorder=3,
                     label=f"smoothed minimum at lr {sweep.lrs[sweep.lowest]:.2g}")
        axes.axvline(sweep.suggestion, color="C3", linestyle="--", linewidth=1.2,
                     label=f"suggested lr {sweep.suggestion:.2g} (a tenth of it)")
    axes.set_xscale("log")
    axes.set(xlabel="learning rate (log scale)", ylabel="training loss", title=title or "Learning-rate range test")
    finite = [value for value in (*sweep.losses, *sweep.smoothed) if math.isfinite(value)]
    if finite:  # from the lowest loss to the first smoothed one, and a little more
        first = sweep.smoothed[0] if math.isfinite(sweep.smoothed[0]) else min(finite)
        low, high = min(finite), max(first, min(finite) * 1.5)
        margin = 0.1 * (high - low) or 0.1
        axes.set_ylim(low - margin, high + 3 * margin)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    save_png(figure, path)
    return figure


def suggestion_line(sweep: LrSweep, overrides: Optional[Sequence[str]]) -> str:
    """The one line the sweep ends with: the learning rate it suggests and the command that trains with it (the
    run's own overrides, less the sweep's), or why it suggests none."""
    suggestion = sweep.suggestion
    if suggestion is None:
        return (f"lr_find: no suggestion: the smoothed loss was lowest within the first steps of {len(sweep.lrs)}; "
                f"start lower (trainer.lr_find.min_lr) or take more steps (trainer.lr_find.num_steps)")
    kept = [override for override in overrides or () if not _sets_a_sweep_key(override)]
    command = shlex.join(["train", *kept, f"optimizer.lr={suggestion:.2g}"])
    return (f"lr_find: suggested learning rate {suggestion:.2g} (a tenth of where the smoothed loss was lowest): "
            f"{command}")


def _sets_a_sweep_key(override: str) -> bool:
    key = override.partition("=")[0].lstrip("+~")
    return any(key == sweep_key or key.startswith(sweep_key + ".") for sweep_key in SWEEP_KEYS)
