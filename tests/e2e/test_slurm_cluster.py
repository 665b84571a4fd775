"""train as Slurm jobs on a real one-node cluster (tests/e2e/slurm_cluster.py): scripts/slurm/train.sbatch on the
CPU-only node, with two processes, and at its time limit (requeued, resumed, then cancelled for good); launcher
sweeps with their defaults, with requests that can never run, and preempted within a grace time, then cancelled by
Ctrl-C; preemption with and without a grace time. Skipped, with the reason, where the cluster cannot be started
(not root, or Slurm not installed: .ci/run installs it)."""

from __future__ import annotations

import json
import os
import shlex
import signal
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


def test_train_sbatch_runs_two_processes_on_the_cpu_only_node_to_their_end(cluster, tmp_path):
    """scripts/slurm/train.sbatch with two tasks: srun starts two `train` processes, which find their places in
    srun's variables and train one run together (gloo), to its end."""
    job = cluster.submit("--ntasks-per-node=2", "--cpus-per-task=1", f"--chdir={tmp_path}", str(SBATCH_SCRIPT), *XOR,
                         "trainer.max_epochs=2")
    log = tmp_path / f"slurm-train-{job}.out"
    fields = cluster.wait_for(job, ("COMPLETED", "FAILED", "CANCELLED"))
    assert fields["JobState"] == "COMPLETED", _text(log)
    summary = json.loads((tmp_path / "runs" / f"train-{job}" / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"], summary["processes"]) == ("max_epochs", 2, 2)
    assert _text(log).strip().splitlines()[-1] == (f"train.sbatch: the training has ended (exit 0); its results are "
                                                   f"in runs/train-{job}")


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


@pytest.mark.parametrize("request_, said", [
    ("hydra.launcher.cpus_per_task=64", "can never start, pending for PartitionConfig: it asks for more than any "
                                        "node of its partition has"),
    ("hydra.launcher.gpus_per_node=1", "sbatch refused the sweep's jobs: Invalid generic resource (gres) "
                                       "specification"),
    ("trainer.max_epochs=-5", "ended without a result: train: error: trainer.max_epochs: got -5, expected an "
                              "integer >= 1"),  # refused inside the job: no result, and no sacct here to tell
], ids=["more-cpus-than-any-node", "a-gpu-where-there-is-none", "refused-in-the-job"])
def test_a_sweep_whose_jobs_cannot_run_ends_in_one_line_and_leaves_nothing_queued(cluster, tmp_path, request_, said):
    swept = subprocess.run([str(TRAIN), "-m", "hydra/launcher=slurm", request_, *XOR, "seed=0,1",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=cluster.env,
                           capture_output=True, text=True, timeout=120)
    assert swept.returncode == 1, swept.stderr
    last = swept.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: ") and said in last, swept.stderr
    assert "Traceback" not in swept.stderr
    assert _queued(cluster) == ""


def test_a_sweep_job_preempted_within_a_grace_time_comes_back_and_ctrl_c_cancels_it(cluster, tmp_path):
    """hydra/launcher=slurm on the partition with a GraceTime: the job's train gets SIGTERM, saves, sees the
    preemption and hands it to submitit's requeue; the job resumes from its last.pt. Ctrl-C on `train -m` then
    cancels it, in one line, and leaves nothing in the queue."""
    sweep = tmp_path / "sweep"
    swept = subprocess.Popen([str(TRAIN), "-m", "hydra/launcher=slurm", "hydra.launcher.partition=grace", *XOR,
                              "trainer.max_epochs=100000", "trainer.early_stopping.patience=null",
                              "trainer.checkpoint.every_n_steps=5", f"hydra.sweep.dir={sweep}"],
                             cwd=tmp_path, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = sweep / "0" / "train.log"
    try:
        deadline = time.monotonic() + 120
        while not (sweep / "0" / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        urgent = cluster.submit("--partition=urgent", f"--cpus-per-task={len(os.sched_getaffinity(0))}", "--mem=1G",
                                wrap="sleep 2")
        cluster.wait_for(urgent, ("COMPLETED",))
        deadline = time.monotonic() + 120
        while "resumed from" not in _text(log) and time.monotonic() < deadline:
            time.sleep(0.5)
        swept.send_signal(signal.SIGINT)
        _, stderr = swept.communicate(timeout=60)
    finally:
        swept.kill()
    assert "Slurm is preempting job" in _text(log)
    assert f"resumed from {sweep / '0' / 'checkpoints' / 'last.pt'}" in _text(log)
    assert swept.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("train: Ctrl-C: cancelled the sweep's 1 Slurm job(s)"), stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 30
    while _queued(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _queued(cluster) == ""


def _queued(cluster) -> str:
    return cluster.run("squeue", "--noheader", "--states=PENDING,RUNNING").stdout.strip()


SBATCH_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm" / "train.sbatch"


def test_train_sbatch_at_its_time_limit_requeues_and_carries_on_and_after_scancel_stays_cancelled(cluster, tmp_path):
    """scripts/slurm/train.sbatch as it comes, on the CPU-only node, with a time limit of 1 minute and the warning
    45 s ahead: SIGUSR1 to the script, the training saves and stops, the script requeues the job, which resumes in
    the same run directory. Then scancel: train saves, and the job stays cancelled. The log has no traceback, and
    each start's last line says how it ended."""
    job = cluster.submit("--time=1", "--signal=B:USR1@45", f"--chdir={tmp_path}", str(SBATCH_SCRIPT), *XOR,
                         "trainer.max_epochs=100000", "trainer.early_stopping.patience=null", "trainer.requeue=true",
                         "trainer.checkpoint.every_n_steps=5")
    run_dir, log = tmp_path / "runs" / f"train-{job}", tmp_path / f"slurm-train-{job}.out"
    deadline = time.monotonic() + 150  # the warning within 45 s, the requeued job held for 30 s (cred_expire)
    while time.monotonic() < deadline and "resumed from" not in _text(run_dir / "train.log"):
        time.sleep(1)
    assert f"resumed from {run_dir / 'checkpoints' / 'last.pt'}" in _text(run_dir / "train.log"), _text(log)
    assert cluster.job(job)["Restarts"] == "1"
    assert cluster.run("scancel", str(job)).returncode == 0
    cluster.wait_for(job, ("CANCELLED",))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _text(log).count("train.sbatch: the training saved") < 2:
        time.sleep(0.5)
    said = [line for line in _text(log).splitlines() if line.startswith("train.sbatch: the training")]
    assert [line.split("; ")[1].split(" ")[:3] for line in said] == [["the", "job", "is"], ["not", "requeued:", f"RUN_DIR=runs/train-{job}"]], said
    assert "Traceback" not in _text(log)
    assert json.loads((run_dir / "summary.json").read_text())["starts"] == 2
    time.sleep(3)  # a requeue would show by now
    assert (cluster.job(job)["JobState"], cluster.job(job)["Restarts"]) == ("CANCELLED", "1")


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


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
