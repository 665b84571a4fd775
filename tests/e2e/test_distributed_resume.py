"""Resume exactness under torchrun: each
process sums the losses of its own share of the epoch's samples (EpochProgress), rank 0 alone writes the
checkpoints, and every process took rank 0's share back on resume; the epoch's train_loss, summed over the
processes, counted rank 0's share twice and the other's not at all. Weights were exact, metrics.csv was not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

from conftest import metrics_rows
from helpers.commands import assert_succeeded, run_command
from pausing_model import MODEL, wait_until
from trainer.training.checkpoint import load_checkpoint

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
RUN = ("-m", "trainer", MODEL, "data=xor", "data.batch_size=70", "model.hidden_sizes=[16]", "trainer.device=cpu",
       "trainer.max_epochs=2", "trainer.deterministic=true", "trainer.curves=false",
       "trainer.log_every_n_steps=2", "trainer.resume=auto")
"""xor: 10 steps an epoch, each process taking half of each batch; the processes agree on a stop every 2 steps."""


def test_two_processes_stopped_mid_epoch_and_resumed_write_the_metrics_of_an_uninterrupted_run(tmp_path):
    tests = Path(__file__).parent
    env = {"PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    whole = run_command([TORCHRUN, "--standalone", "--nproc_per_node=2", *RUN, f"hydra.run.dir={tmp_path / 'whole'}"],
                        tmp_path, extra_env=env)
    assert_succeeded(whole)

    run_dir, pause = tmp_path / "stopped", tmp_path / "pause"
    pause.mkdir()
    environment = {**os.environ, **env, "PAUSE_DIR": str(pause), "PAUSE_AT_STEP": "5", "OMP_NUM_THREADS": "1"}
    stopped = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", *RUN, f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_until(lambda: (pause / "paused").exists() or stopped.poll() is not None, "the pause at step 5")
    stopped.send_signal(signal.SIGTERM)  # torchrun hands it on to both processes, which stop together at step 6
    (pause / "go").touch()
    stopped.wait(timeout=120)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["engine"]["global_step"], state["batcher"]["position"]) == (6, 6)  # mid-epoch 1

    resumed = run_command([TORCHRUN, "--standalone", "--nproc_per_node=2", *RUN, f"hydra.run.dir={run_dir}"],
                          tmp_path, extra_env=env)
    assert_succeeded(resumed)
    expected = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    actual = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert metrics_rows(run_dir) == metrics_rows(tmp_path / "whole")  # the epoch resumed half-way too
