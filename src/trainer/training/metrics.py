"""Metrics of a whole split from the model's outputs."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.training.losses import targets_for


def split_metrics(criterion: nn.Module, output: torch.Tensor, y: torch.Tensor,
                  target_std: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Loss and metrics of a whole split from the model's outputs (N, num_outputs): accuracy for classes (int64 y,
    (N,)), MSE, RMSE and R^2 for values (y (N, T))."""
    metrics = {"loss": criterion(output, targets_for(criterion, y))}
    if y.dtype == torch.int64:
        metrics["accuracy"] = accuracy(output, y)
    else:
        metrics.update(regression_errors(output, y, target_std))
    return dict(zip(metrics, torch.stack(list(metrics.values())).tolist()))  # one device sync for all


def predicted_classes(output: torch.Tensor) -> torch.Tensor:
    """(N, C) logits -> (N,) the class of the largest; (N, 1) for binary -> class 1 where the logit is > 0."""
    return output.argmax(dim=1) if output.shape[1] > 1 else (output[:, 0] > 0).long()


def class_probabilities(output: torch.Tensor) -> torch.Tensor:
    """(N, C) logits -> (N, C) softmax probabilities; (N, 1), binary cross-entropy's one logit -> (N, 2): the sigmoid
    is class 1's probability, its complement class 0's."""
    if output.shape[1] > 1:
        return torch.softmax(output, dim=1)
    one = torch.sigmoid(output)
    return torch.cat([1 - one, one], dim=1)


def accuracy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose predicted class is the label. output: (N, C) logits, or (N, 1) for binary;
    labels: (N,) class indices."""
    return (predicted_classes(output) == labels).float().mean()


def confusion_matrix(output: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts: row i, column j is the samples of class i predicted as class j. output as for
    `accuracy`; labels: (N,) class indices."""
    pairs = labels * num_classes + predicted_classes(output)  # (N,): one bin per (true, predicted)
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


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
