"""train as a Slurm job on a real one-node cluster (tests/slurm_cluster.py): a job on a CPU-only node runs to its
end, and `scancel` saves last.pt and the job stays cancelled. Skipped, with the reason, where the cluster cannot be
started (not root, or Slurm not installed: .ci/run installs it)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import one_node_cluster

TRAIN = Path(sys.executable).parent / "train"
XOR = ("data=xor", "model.hidden_sizes=[8]", "trainer.curves=false", "trainer.device=cpu")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """This worker's cluster: its own ports, so that pytest's workers never share one."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    with one_node_cluster(tmp_path_factory.mktemp("slurm"), port=17000 + 10 * worker) as started:
        yield started


def train_command(*overrides: str) -> str:
    return shlex.join(["exec", str(TRAIN), *overrides])


def test_a_train_job_on_a_cpu_only_node_runs_to_its_end(cluster, tmp_path):
    run_dir = tmp_path / "run"
    job = cluster.submit("--cpus-per-task=1", "--mem=1G",
                         wrap=train_command(*XOR, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"))
    fields = cluster.wait_for(job, ("COMPLETED", "FAILED", "CANCELLED"))
    assert fields["JobState"] == "COMPLETED", (run_dir / "train.log").read_text() if run_dir.exists() else fields
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"]) == ("max_epochs", 2)


def test_scancel_saves_last_pt_and_the_job_stays_cancelled(cluster, tmp_path):
    """scancel is a user's `stop`: train saves and ends; even with trainer.requeue=true the job is not requeued."""
    run_dir = tmp_path / "run"
    job = cluster.submit("--cpus-per-task=1", "--mem=1G",
                         wrap=train_command(*XOR, "trainer.max_epochs=100000", "trainer.requeue=true",
                                            "trainer.checkpoint.every_n_steps=5", f"hydra.run.dir={run_dir}"))
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.run("scancel", str(job)).returncode == 0
    cluster.wait_for(job, ("CANCELLED",))
    deadline = time.monotonic() + 30
    while not (run_dir / "summary.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "interrupted"
    time.sleep(3)  # a requeue would show by now
    fields = cluster.job(job)
    assert (fields["JobState"], fields["Restarts"]) == ("CANCELLED", "0")
