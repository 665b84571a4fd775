"""Metrics of a whole split from the model's outputs, and the per-epoch CSV log."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import torch


def accuracy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose predicted class is the label. output: (N, C) logits, or (N, 1) for binary
    (class 1 where the logit is > 0); labels: (N,) class indices."""
    predicted = output.argmax(dim=1) if output.shape[1] > 1 else (output[:, 0] > 0).long()
    return (predicted == labels).float().mean()


def regression_errors(output: torch.Tensor, target: torch.Tensor,
                      target_std: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """MSE and RMSE in the data's units (undoing target standardisation), and R^2 = 1 - SS_res / SS_tot.
    output, target: (N, T)."""
    squared = (output - target).pow(2)
    if target_std is not None:
        squared = squared * target_std.to(squared.device).pow(2)
    mse = squared.mean()
    residual = (output - target).pow(2).sum(dim=0)
    total = (target - target.mean(dim=0)).pow(2).sum(dim=0).clamp_min(1e-12)
    return {"mse": mse, "rmse": mse.sqrt(), "r2": (1 - residual / total).mean()}


class MetricsLog:
    """metrics.csv: one row per epoch; the columns are fixed by the first row."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        """None keeps the rows without writing them (the processes other than rank 0 of a distributed run)."""
        self.rows: list[dict[str, float]] = []

    def restore(self, rows: list[dict[str, float]]) -> None:
        """Start over from `rows` (a checkpoint's): metrics.csv holds exactly them, and new rows follow."""
        self.rows = []
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, float]) -> None:
        first = not self.rows
        self.rows.append(row)
        if self.path is None:
            return
        with self.path.open("w" if first else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(self.rows[0]))
            if first:
                writer.writeheader()
            writer.writerow(row)
