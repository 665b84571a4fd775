"""Pick the torch.device once, from `trainer.device`; everything below takes a torch.device."""

from __future__ import annotations

import torch

from trainer.config import ConfigError


def available_devices() -> list[str]:
    """The device types this machine can run on, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(name: str) -> torch.device:
    """auto -> the best available (cuda, then mps, then cpu); a named device must exist on this machine."""
    available = available_devices()
    if name == "auto":
        return torch.device(available[0])
    if name not in available:
        raise ConfigError("trainer.device", name, f"one of auto, {', '.join(available)} ({name} is not available here)")
    return torch.device(name)
