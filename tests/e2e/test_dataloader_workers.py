"""The DataLoader workers of a real `train` (data.pipeline=dataloader): kept from epoch to epoch and from one
validation to the next, gone when the run ends or stops on a signal, and a run stopped mid-epoch by SIGTERM and
resumed ends bit-identical to one never stopped. (tests/unit/data/test_loader_workers.py holds LoaderBatcher's own
tests.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch

from conftest import metrics_rows
from pausing_model import MODEL, TrainProcess, wait_until
from trainer.training.checkpoint import load_checkpoint

RUN = (MODEL, "data=xor", "model.hidden_sizes=[32]", "model.dropout=0.2", "scheduler=cosine", "data.batch_size=70",
       "trainer.max_epochs=3", "data.pipeline=dataloader", "data.num_workers=2")
"""xor's 700 training samples in batches of 70: 10 steps an epoch. Dropout and the per-step cosine schedule make
any state a resume forgets show in the parameters."""


def others_in_group(leader: int) -> list[int]:
    """The processes left in the process group of `leader` (a `train` started in a session of its own), but it."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != leader:
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended since the listing
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == leader:  # the fields after the name: state, ppid, pgrp
                members.append(int(entry))
    return members


def test_workers_last_the_run_end_with_it_or_with_sigterm_and_a_resumed_run_is_exact(tmp_path):
    whole = TrainProcess(*RUN, f"hydra.run.dir={tmp_path / 'whole'}", folder=tmp_path / "whole-process")
    assert whole.wait() == 0, whole.stderr
    assert others_in_group(whole.process.pid) == []

    run_dir = tmp_path / "part"
    part = TrainProcess(*RUN, f"hydra.run.dir={run_dir}", pause_at=15, folder=tmp_path / "part-process")
    part.wait_until_paused()  # mid-epoch 2: epoch 1 was trained and validated
    assert len(others_in_group(part.process.pid)) == 4  # training's 2 workers, and validation's, kept since epoch 1
    os.killpg(part.process.pid, signal.SIGTERM)  # as Slurm and a terminal signal: the workers get it too
    wait_until(lambda: "SIGTERM: finishing this step" in (run_dir / "train.log").read_text(), "the handler")
    part.go_on()
    assert part.wait() == 128 + signal.SIGTERM.value, part.stderr
    assert "Traceback" not in part.stderr
    assert others_in_group(part.process.pid) == []
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["engine"]["global_step"], state["batcher"]["epoch"], state["batcher"]["position"]) == (15, 1, 5)

    resumed = TrainProcess(*RUN, "trainer.resume=auto", f"hydra.run.dir={run_dir}", folder=tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr
    assert others_in_group(resumed.process.pid) == []
    expected = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    actual = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert metrics_rows(run_dir) == metrics_rows(tmp_path / "whole") and len(metrics_rows(run_dir)) == 3
    assert json.loads((run_dir / "summary.json").read_text())["test"] == json.loads(
        (tmp_path / "whole" / "summary.json").read_text())["test"]
