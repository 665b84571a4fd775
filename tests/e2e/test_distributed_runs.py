"""Many processes: `torchrun --nproc_per_node=2` (gloo on the CPU) trains as one process does, every process ends
with the same weights, and a run (or a sweep) has one directory, written by rank 0 alone; a SIGTERM stops every
process at one step. (tests/unit/data/test_batcher.py checks each process's share of a batch.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_config, metrics_rows
from helpers.commands import assert_succeeded, run_command
from trainer.run import train as train_in_process

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
WORKER = Path(__file__).with_name("ddp_worker.py")
DIGITS = ("data=digits", "trainer.max_epochs=8", "trainer.device=cpu", "trainer.curves=false")


def torchrun(*args: str, cwd: Path):
    return run_command([TORCHRUN, "--standalone", "--nproc_per_node=2", *args], cwd)


def test_two_processes_train_digits_as_one_does_and_end_with_identical_weights(tmp_path):
    (tmp_path / "one").mkdir()
    train_in_process(compose_config(*DIGITS, shrink=False), tmp_path / "one")  # the lone process
    two = torchrun(str(WORKER), *DIGITS, cwd=tmp_path)  # in outputs/DATE/TIME, which each process resolves
    assert_succeeded(two)
    run_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 1, run_dirs  # rank 0's, for both
    (tmp_path / "two").symlink_to(run_dirs[0])

    single = json.loads((tmp_path / "one" / "summary.json").read_text())
    shared = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert shared["processes"] == 2 and shared["steps"] == single["steps"]  # data.batch_size is the global batch
    assert shared["test"]["accuracy"] > 0.9
    assert abs(shared["test"]["accuracy"] - single["test"]["accuracy"]) <= 0.01
    # Each step of the two processes trains on the batch the lone process took: the curves agree closely.
    for lone, pair in zip(metrics_rows(tmp_path / "one"), metrics_rows(tmp_path / "two"), strict=True):
        assert float(pair["val_loss"]) == pytest.approx(float(lone["val_loss"]), rel=1e-3)

    rank0, rank1 = (torch.load(tmp_path / "two" / f"parameters.rank{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    last = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last[name], rank0[name]) for name in rank0)
    # Rank 0 alone printed the epochs and wrote the log.
    assert two.stdout.count("epoch 8/8") == 1
    assert (tmp_path / "two" / "train.log").read_text().count("epoch 8/8") == 1


def test_a_sweep_under_torchrun_has_one_directory_not_one_per_process(tmp_path):
    result = torchrun("-m", "trainer", "-m", "data=moons", "optimizer=sgd,adam", "trainer.max_epochs=1",
                      "trainer.device=cpu", "trainer.curves=false", cwd=tmp_path)
    assert_succeeded(result)
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    assert sorted(path.name for path in sweeps[0].iterdir() if path.is_dir()) == ["0", "1"]
    assert all(json.loads((sweeps[0] / job / "summary.json").read_text())["processes"] == 2 for job in "01")


def test_sigterm_to_torchrun_stops_every_process_at_one_step_and_resume_carries_on(tmp_path):
    run_dir = tmp_path / "run"
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "trainer", *DIGITS[:1], "trainer.max_epochs=500",
               "trainer.device=cpu", "trainer.curves=false", "trainer.early_stopping.patience=null",
               f"hydra.run.dir={run_dir}", "trainer.resume=auto"]
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
    stdout, stderr = process.communicate(timeout=120)
    assert (run_dir / "summary.json").exists(), f"exit {process.returncode}\n{stderr[-4000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted", stderr
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["engine"]["global_step"] == summary["steps"] > 0
    assert "stopped by SIGTERM" in (run_dir / "train.log").read_text()

    finish = summary["epochs"] + 1  # carry on, with both processes, to the end of the next epoch
    resumed = run_command([*command[:-3], f"trainer.max_epochs={finish}", *command[-2:]], tmp_path)
    assert_succeeded(resumed)
    assert f"resumed from {run_dir / 'checkpoints' / 'last.pt'}" in resumed.stdout
    final = json.loads((run_dir / "summary.json").read_text())
    assert (final["stop_reason"], final["epochs"], final["steps"]) == ("max_epochs", finish, finish * 20)


def test_train_called_by_a_program_with_a_process_group_of_its_own_returns_to_it(tmp_path):
    """A distributed run's process ends inside `train` (distributed.end_process: no interpreter teardown); a
    program that has its own process group and calls train for a lone run gets control back, and its own exit
    handlers run at its own exit."""
    host = tmp_path / "host.py"
    host.write_text(
        "import atexit, sys\n"
        "import torch.distributed as dist\n"
        "from trainer import cli\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'rendezvous'}', rank=0, world_size=1)\n"
        "atexit.register(print, 'host: exit handler')\n"
        "sys.argv = ['train', 'data=xor', 'model.hidden_sizes=[4]', 'trainer.max_epochs=1', 'trainer.curves=false',\n"
        "            'trainer.device=cpu', 'hydra.run.dir=run']\n"
        "cli.train()\n"
        "print('host: train returned')\n")
    ran = subprocess.run([sys.executable, str(host)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.index("host: train returned") < ran.stdout.index("host: exit handler")
    assert (tmp_path / "run" / "summary.json").exists()

