"""How a loss meets the data: how many outputs the model needs for it, the form the targets take, and the
optional L1 / L2 penalties."""

from __future__ import annotations

import torch
from hydra.utils import get_class
from torch import nn

from trainer.data import DataDescription
from trainer.vocabulary import USUAL_LOSS


def for_task(task: str) -> nn.Module:
    """`loss=auto`: the usual loss of the data's task, for sets whose task is known only once read (data=csv)."""
    return get_class(USUAL_LOSS[task])()


# loss=auto's _target_ of 0.1.0 (trainer.moved_modules): Hydra's errors and `trust` name it by that path.
for_task.__module__ = "trainer.losses"


def num_outputs(criterion: nn.Module, data: DataDescription) -> int:
    """Logits per class for cross-entropy, one logit for binary cross-entropy, one value per target otherwise."""
    if isinstance(criterion, nn.CrossEntropyLoss):
        return data.num_classes
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        return 1
    return data.num_targets


def targets_for(criterion: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy compares one logit per sample with a float 0/1: class indices (N,) -> (N, 1) floats."""
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        return y.float().unsqueeze(1)
    return y


def weight_penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    """l1 * sum|w| + l2 * sum w^2 over weight matrices (biases and norm scales are not penalised)."""
    weights = [p for p in model.parameters() if p.dim() >= 2]
    penalty = 0.0
    if l1:
        penalty = penalty + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        penalty = penalty + l2 * sum(w.pow(2).sum() for w in weights)
    return penalty
