"""trainer.precision: the float type the forward pass computes in, and the loss scaling float16 needs."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch

AUTOCAST_DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """trainer.precision's float type on `device`: auto is bfloat16 on a CUDA GPU that computes in it (Ampere and
    later), and float32 (no autocast: None) anywhere else, so that a recipe asking for bf16 runs on a CPU too."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    return AUTOCAST_DTYPES[precision]


def autocast_to(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` (one of AUTOCAST_DTYPES); for None no context at all (entering even a disabled one
    costs time at every step)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Precision:
    """Autocast to trainer.precision's float type, and at "16" the GradScaler: float16 gradients underflow, so
    the loss is multiplied up before backward and the gradients divided back down before the step."""

    def __init__(self, precision: str, device: torch.device):
        self.device, self.dtype = device, autocast_dtype(precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")

    @property
    def scales_the_loss(self) -> bool:
        return self.scaler.is_enabled()

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_to(self.device, self.dtype)

    def backward(self, objective: torch.Tensor) -> None:
        """d objective / d parameter, added into each parameter's .grad (scaled up at float16)."""
        self.scaler.scale(objective).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients back to their true size, so that clipping and the health checks see them."""
        if self.scales_the_loss:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(); at float16 the scaler's, which leaves out a step whose gradients overflowed and
        lowers the scale (and raises it again after a run of good steps)."""
        if self.scales_the_loss:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def scale(self) -> float:
        """The loss scale now (1.0 without scaling); reading it waits for the device."""
        return self.scaler.get_scale() if self.scales_the_loss else 1.0

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)
