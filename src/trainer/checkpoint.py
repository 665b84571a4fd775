"""Checkpoints: one plain dict of tensors and plain values, written atomically, read with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write to a temp file in the same folder, fsync it, then rename over `path`: a crash mid-write leaves the
    previous file intact, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running any pickled code (weights_only=True)."""
    return torch.load(path, map_location=map_location, weights_only=True)
