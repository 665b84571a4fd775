"""The console scripts as a user runs them: subprocesses, from some other working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TRAIN = shutil.which("train", path=str(Path(sys.executable).parent))
"""The console script installed next to this Python."""

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so cuda is a valid device")


def run_command(command: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"} | (extra_env or {})
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is faster than two contending for a 2-core CPU
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert TRAIN, f"no `train` console script next to {sys.executable}: is the package installed?"
    return run_command([TRAIN, *args], cwd)


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
