"""A model's outputs over a whole split, as evaluation (during training, and the `evaluate` command) reads them."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.inference_mode()
def outputs_and_targets(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs over all batches as float32 (N, num_outputs), and the targets, (N,) or (N, T)."""
    outputs, targets = [], []
    for x, y in batches:
        # A copy, also of float32 outputs: under CUDA graphs (trainer.compile_mode=reduce-overhead) the model's
        # output lives in memory that its next call overwrites.
        outputs.append(model(x).to(torch.float32, copy=True))  # (B, num_outputs)
        targets.append(y)
    return torch.cat(outputs), torch.cat(targets)
