"""trainer.compile: torch.compile the model, or refuse in one line where it cannot work here.

torch.compile compiles lazily, at the first step, and a missing compiler would show there as a long traceback
from deep inside the run; the usual causes are checked before anything runs instead.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from typing import Optional

import torch
from torch import nn

from trainer.config import ConfigError


def compiled(model: nn.Module, device: torch.device, mode: str = "default") -> nn.Module:
    """`model` compiled by torch.compile in `mode` (trainer.compile_mode); it shares the model's parameters, and
    its state_dict keys carry a prefix, so checkpoints keep saving the plain model's."""
    problem = _why_unsupported(device)
    if problem is not None:
        raise ConfigError("trainer.compile", True, f"false on this machine: {problem}")
    return torch.compile(model, mode=mode)


def _why_unsupported(device: torch.device) -> Optional[str]:
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return (f"torch {torch.__version__} cannot compile on Python {platform.python_version()} "
                f"({platform.system()})")
    compilers = (os.environ.get("CXX"), "g++", "clang++", "c++")
    if device.type == "cpu" and not any(shutil.which(name) for name in compilers if name):
        return "on a CPU torch.compile needs a C++ compiler (g++ or clang++), and none is on the PATH"
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "on CUDA torch.compile needs Triton (pip install triton)"
    return None
