"""The kernel choices a run asks of torch's backends: float32 matmul precision (TF32), cuDNN autotuning, and the
channels-last memory format for convolutional models.

torch's settings are process-wide, so they are set once, when a run is built; the memory format is the model's
and its batches', and each Batcher serves its batches in it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from trainer.config import ConfigError


def use_backend_settings(device: torch.device, matmul_precision: str = "highest",
                         cudnn_benchmark: Optional[bool] = None, deterministic: bool = False) -> None:
    """trainer.matmul_precision and trainer.cudnn_benchmark, for the whole process: a run's, or, in `evaluate` and
    `predict`, the run's that saved the checkpoint (so that its test repeats there)."""
    torch.set_float32_matmul_precision(matmul_precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic if cudnn_benchmark is None else cudnn_benchmark


def memory_format_for(model: nn.Module, device: torch.device, channels_last: Optional[bool]) -> torch.memory_format:
    """channels_last for a model with 2-D convolutions when trainer.channels_last asks for it (null: on CUDA,
    where tensor-core convolutions want it); contiguous otherwise. A model without them is refused channels_last
    in one line: its inputs are not images in (N, C, H, W)."""
    convolutional = any(isinstance(module, nn.Conv2d) for module in model.modules())
    if channels_last and not convolutional:
        raise ConfigError("trainer.channels_last", True, f"false or null for {type(model).__name__}, which has no "
                          f"2-D convolution to take its input in channels-last memory")
    wanted = device.type == "cuda" if channels_last is None else channels_last
    return torch.channels_last if wanted and convolutional else torch.contiguous_format
