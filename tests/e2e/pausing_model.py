"""Stopping a real `train` process at a chosen step, to signal or kill it there.

`PausingMLP` is trainer.models.MLP (same layers, same initialisation, same state_dict), except that training
forward pass number $PAUSE_AT_STEP of its process creates $PAUSE_DIR/paused and waits there until $PAUSE_DIR/go
exists. A run points `model._target_` at it (the subprocess finds this module on PYTHONPATH), and the test
starts it with `start_train`, waits for `paused`, then sends its signal or SIGKILL at exactly that step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from trainer.models import MLP

MODEL = "model._target_=pausing_model.PausingMLP"
WAIT_SECONDS = 120
"""The longest a test waits for the process, and the process for the test: a cold start under load is slow."""


class PausingMLP(MLP):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.training_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.training_forwards += 1
            if str(self.training_forwards) == os.environ.get("PAUSE_AT_STEP"):
                folder = Path(os.environ["PAUSE_DIR"])
                (folder / "paused").touch()
                wait_until(lambda: (folder / "go").exists(), "the test to say go")
        return super().forward(x)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {WAIT_SECONDS} s for {what}")
        time.sleep(0.01)


class TrainProcess:
    """`train ARGS` started in the background, pausing at training step `pause_at` (counted from 1 in this
    process; None runs through). stdout and stderr go to files in `folder`, which also holds the pause flags."""

    def __init__(self, *args: str, folder: Path, pause_at: int | None = None, env: dict[str, str] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        here, bin_dir = Path(__file__).parent, Path(sys.executable).parent
        environment = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
        environment.update(PYTHONPATH=str(here), OMP_NUM_THREADS="1", PAUSE_DIR=str(folder),
                           PATH=str(bin_dir))  # no scontrol of this machine's can be reached
        if pause_at is not None:
            environment["PAUSE_AT_STEP"] = str(pause_at)
        environment.update(env or {})
        with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
            # A process group of its own, as a job's or a terminal's: a test can signal all of it, workers too.
            self.process = subprocess.Popen([str(bin_dir / "train"), *args], cwd=folder, env=environment,
                                            stdout=stdout, stderr=stderr, start_new_session=True)

    def wait_until_paused(self) -> None:
        wait_until(lambda: (self.folder / "paused").exists() or self.process.poll() is not None, "the pause")
        assert self.process.poll() is None, f"train ended before the pause: {self.stderr}"

    def go_on(self) -> None:
        (self.folder / "go").touch()

    def wait(self) -> int:
        return self.process.wait(timeout=WAIT_SECONDS)

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr").read_text()

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout").read_text()
