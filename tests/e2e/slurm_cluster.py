"""A real one-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's packages (slurmctld,
slurmd, slurm-client, munge), started by hand in a folder of their own, with no systemd and no cgroups.

Each pytest worker starts its own cluster (its own munge socket, ports, state and spool folders), so that workers
never share one; SLURM_CONF in the environment of the commands a test runs picks it. The settings are those a
container without systemd needs: processes tracked through /proc (proctrack/linuxproc), CPU binding by affinity,
memory per CPU, requeue allowed, and credentials that expire after 30 s (a requeued job would wait 120 s with the
default). The daemons are stopped by pid when the cluster is done with.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue")
NODE = socket.gethostname().split(".")[0]
"""The node's name: this machine's, as on a real cluster, where a job's processes reach the first node of their
step by its name (train's srun mode does)."""
START_SECONDS = 60
"""How long the cluster may take to come up before the tests that need it are skipped."""


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]
    """The environment for commands on this cluster: SLURM_CONF names its slurm.conf."""

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, *arguments: str, wrap: Optional[str] = None) -> int:
        """sbatch ARGUMENTS (options, then a batch script and its arguments) or sbatch OPTIONS --wrap WRAP; the job
        id."""
        submitted = self.run("sbatch", "--parsable", f"--chdir={self.folder}",
                             *(arguments if wrap is None else (*arguments, f"--wrap={wrap}")))
        assert submitted.returncode == 0, submitted.stderr
        return int(submitted.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job`'s fields (JobState, Reason, Restarts, PreemptTime, ...); empty once it is purged."""
        shown = self.run("scontrol", "show", "job", str(job_id), "--oneliner")
        return dict(re.findall(r"(\w+)=(\S*)", shown.stdout)) if shown.returncode == 0 else {}

    def wait_for(self, job_id: int, states: tuple[str, ...], timeout: float = 120) -> dict[str, str]:
        """The job's fields once its JobState is one of `states`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self.job(job_id)
            if fields.get("JobState") in states:
                return fields
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} never reached {states}: {self.job(job_id)}")


def missing_requirements() -> Optional[str]:
    """Why a cluster cannot be started here; None when it can."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "a Slurm cluster of its own needs root on Linux"
    search = f"/usr/sbin:/usr/bin:{os.environ['PATH']}"
    absent = [name for name in (*DAEMONS, *COMMANDS) if shutil.which(name, path=search) is None]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} missing: apt-get install slurmctld slurmd slurm-client "
                f"munge)")
    return None


@contextlib.contextmanager
def one_node_cluster(folder: Path, port: int) -> Iterator[Cluster]:
    """A one-node cluster whose files are in `folder` and whose daemons listen on `port` and `port + 1`. Jobs of its
    partition `urgent` preempt (REQUEUE) those of `cpu` (the default; preempted at once) and of `grace` (given 60 s
    of grace: SIGTERM at once, the job ends when it likes within them)."""
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    for name in ("state", "spool", "munge"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = folder / "munge" / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, port, munge_socket))
    # As for a user whose venv is active: its commands (train) on PATH, which sbatch passes on to the jobs.
    env = {**os.environ, "SLURM_CONF": str(conf),
           "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:{os.environ['PATH']}"}
    started: list[Path] = []
    try:
        _start(["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}",
                f"--pid-file={folder / 'munge' / 'munged.pid'}", f"--log-file={folder / 'munge' / 'munged.log'}",
                f"--seed-file={folder / 'munge' / 'munged.seed'}"], env, folder / "munge" / "munged.pid", started)
        _start(["slurmctld", "-f", str(conf)], env, folder / "slurmctld.pid", started)
        _start(["slurmd", "-f", str(conf), "-N", NODE], env, folder / "slurmd.pid", started)
        cluster = Cluster(folder, env)
        _wait_until_idle(cluster)
        try:
            yield cluster
        finally:
            _cancel_every_job(cluster)  # a failed test's job would go on training after the daemons stop
    finally:
        for pid_file in reversed(started):
            _stop(pid_file)


def _slurm_conf(folder: Path, port: int, munge_socket: Path) -> str:
    host = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    return f"""\
ClusterName=trainer{port}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=30
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
SlurmctldPort={port}
SlurmdPort={port + 1}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={memory // cpus}
MinJobAge=300
KillWait=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=cpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=grace Nodes={NODE} MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes={NODE} MaxTime=INFINITE State=UP PriorityTier=10
"""


def _start(command: list[str], env: dict[str, str], pid_file: Path, started: list[Path]) -> None:
    """Start a daemon (it forks into the background) and wait for its pid file."""
    daemon = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    if daemon.returncode != 0:
        pytest.skip(f"{command[0]} did not start here: {(daemon.stderr or daemon.stdout).strip()}")
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started.append(pid_file)


def _wait_until_idle(cluster: Cluster) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        shown = cluster.run("sinfo", "--noheader", "--format=%T")
        if shown.returncode == 0 and "idle" in shown.stdout:
            return
        time.sleep(0.5)
    pytest.skip(f"the cluster did not come up within {START_SECONDS} s: {shown.stderr.strip() or shown.stdout}")


def _cancel_every_job(cluster: Cluster) -> None:
    """scancel every job, and wait (30 s at most) until none is left running."""
    cluster.run("scancel", "--user=root")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = cluster.run("squeue", "--noheader", "--states=RUNNING,COMPLETING,PENDING")
        if running.returncode != 0 or not running.stdout.strip():
            return
        time.sleep(0.5)


def _stop(pid_file: Path) -> None:
    """SIGTERM to the daemon whose pid the file holds, and SIGKILL if it has not ended within 10 s."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
