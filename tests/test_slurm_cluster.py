"""train as a Slurm job on a real one-node cluster (tests/slurm_cluster.py): a job on a CPU-only node runs to its
end, and `scancel` saves last.pt and the job stays cancelled. Skipped, with the reason, where the cluster cannot be
started (not root, or Slurm not installed: .ci/run installs it)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import one_node_cluster

pytestmark = pytest.mark.slurm_cluster  # run on their own: pytest -m slurm_cluster -n 0

TRAIN = Path(sys.executable).parent / "train"
XOR = ("data=xor", "model.hidden_sizes=[8]", "trainer.curves=false", "trainer.device=cpu")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """This worker's cluster: its own ports, so that pytest's workers never share one."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    with one_node_cluster(tmp_path_factory.mktemp("slurm"), port=17000 + 10 * worker) as started:
        yield started


def train_command(*overrides: str, launcher: str = "exec") -> str:
    """The batch script's line: `exec train ...` (train is the batch step), or `srun train ...` (a job step, as
    scripts/slurm/train.sbatch runs it: a preemption's SIGTERM goes to the job steps, not to the batch step). At the
    lowest priority (nice), so that the cluster's jobs do not slow the suite's other tests down."""
    return shlex.join([launcher, "nice", "-n", "19", str(TRAIN), *overrides])


def test_a_train_job_on_a_cpu_only_node_runs_to_its_end(cluster, tmp_path):
    run_dir = tmp_path / "run"
    job = cluster.submit("--cpus-per-task=1", "--mem=1G",
                         wrap=train_command(*XOR, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"))
    fields = cluster.wait_for(job, ("COMPLETED", "FAILED", "CANCELLED"))
    assert fields["JobState"] == "COMPLETED", (run_dir / "train.log").read_text() if run_dir.exists() else fields
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"]) == ("max_epochs", 2)


def test_a_launcher_sweep_with_its_defaults_runs_on_a_cpu_only_node_and_the_report_reads_it(cluster, tmp_path):
    """hydra/launcher=slurm as it comes: no GPU request, cores and memory any node has. (Without slurmdbd, submitit
    warns that sacct cannot tell the jobs' states, and finds their results by their files.)"""
    sweep = tmp_path / "sweep"
    swept = subprocess.run([str(TRAIN), "-m", "hydra/launcher=slurm", *XOR, "trainer.max_epochs=2", "seed=0,1",
                            f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=cluster.env, capture_output=True, text=True,
                           timeout=300)
    assert swept.returncode == 0, swept.stderr
    for job in ("0", "1"):
        assert json.loads((sweep / job / "summary.json").read_text())["stop_reason"] == "max_epochs"
    report = subprocess.run([str(TRAIN.with_name("train-report")), str(sweep)], env=cluster.env, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 0 and report.stdout.count("| max_epochs |") == 2, report.stdout + report.stderr


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


@pytest.mark.parametrize("partition", ["cpu", "grace"], ids=["no-grace-time", "grace-time-60s"])
def test_a_preempted_job_is_requeued_and_carries_on_from_its_last_pt(cluster, tmp_path, partition):
    """A job of a higher-priority partition takes the node's CPUs: the train job step gets SIGTERM, saves last.pt,
    and the job is requeued (by Slurm without a grace time; within one, by train, which sees the job's PreemptTime
    and asks for it), and once the node is free again it resumes in the same run directory."""
    run_dir = tmp_path / "run"
    job = cluster.submit(f"--partition={partition}", "--requeue", "--cpus-per-task=1", "--mem=1G",
                         wrap=train_command(*XOR, "trainer.max_epochs=100000", "trainer.requeue=true",
                                            "trainer.early_stopping.patience=null", "trainer.resume=auto",
                                            "trainer.checkpoint.every_n_steps=5", f"hydra.run.dir={run_dir}",
                                            launcher="srun"))
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    cpus = len(os.sched_getaffinity(0))
    urgent = cluster.submit("--partition=urgent", f"--cpus-per-task={cpus}", "--mem=1G", wrap="sleep 2")
    cluster.wait_for(urgent, ("COMPLETED",))
    deadline = time.monotonic() + 120
    while "resumed from" not in (run_dir / "train.log").read_text() and time.monotonic() < deadline:  # (Slurm
        # holds a requeued job back until the credentials of its first run expire: 30 s here)
        time.sleep(0.5)
    fields = cluster.job(job)
    cluster.run("scancel", str(job))
    assert int(fields["Restarts"]) == 1 and fields["JobState"] in ("RUNNING", "PENDING"), fields
    assert f"resumed from {run_dir / 'checkpoints' / 'last.pt'}" in (run_dir / "train.log").read_text()
