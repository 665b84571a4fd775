"""Checkpoints: one plain dict of tensors and plain values, written atomically, read with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write to a temp file in the same folder, fsync it, then rename over `path`: a crash mid-write leaves the
    previous file intact, never a half-written one. With `keep_previous`, the file it replaces is kept as
    `previous_path(path)`, a fallback should the newest one be damaged later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def previous_path(path: Path) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the file it replaced: last.pt -> last.previous.pt."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _fsync_folder(folder: Path) -> None:
    """Make the renames themselves durable: they live in the folder's entry list. (Windows cannot open a
    folder to sync it; there the renames are as durable as the file system makes them.)"""
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running any pickled code (weights_only=True)."""
    return torch.load(path, map_location=map_location, weights_only=True)
