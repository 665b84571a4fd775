"""Where the YAML config groups are, which every command composes from."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The YAML config groups: inside the installed package, or at the top of a source checkout (editable)."""
    # This file is trainer/config/location.py: the package trainer/ is parents[1], and a checkout's top is
    # parents[3] (src/trainer/config/ below it).
    packaged = Path(__file__).parents[1] / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "configs"
