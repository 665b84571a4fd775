"""Every random number generator a run draws from: seeded at the start, saved in checkpoints, restored on resume.

The states are kept as tensors and plain values, so that a checkpoint loads with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with `deterministic`, allow only kernels that repeat bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_states(device: torch.device) -> dict[str, Any]:
    """The current state of python's, numpy's and torch's CPU generator, and of the CUDA generator of `device`
    when it is a GPU (the one this process draws from: each process of a run has its own)."""
    version, mt_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": numpy_state["state"]["pos"], "has_gauss": numpy_state["has_gauss"],
                  "gauss": numpy_state["gauss"]},
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Put every generator back to a state from `rng_states`; the saved CUDA state (rank 0's, whose GPU drew as
    every other rank's did, all seeded alike) to `device`'s generator, whatever GPUs the saving run had. A state
    saved without a GPU leaves `device`'s as seeded."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = states["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    torch.set_rng_state(states["torch"])
    if states["cuda"] and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"][0], device)
