"""Waiting for a sweep's Slurm jobs (`train -m hydra/launcher=slurm`) as someone at the terminal would want.

submitit's own wait is silent: a job that can never start (more CPUs than any node of its partition has) pends for
ever with nothing said, and Ctrl-C leaves every job in the queue. Here each job's state is said in one line when it
changes (PENDING for Priority, RUNNING), a job that can never start is reported with Slurm's reason and the sweep's
jobs are cancelled, and Ctrl-C cancels them too: nothing stays queued behind a `train -m` that has ended.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from typing import Any, Optional, Sequence

log = logging.getLogger(__name__)

NEVER_STARTS = {
    "PartitionConfig": "it asks for more than any node of its partition has (CPUs, memory, GPUs or nodes): see "
                       "`sinfo -o '%P %D %c %m %G'` and hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, nodes",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows (hydra.launcher.nodes)",
    "PartitionTimeLimit": "its time limit is longer than its partition allows (hydra.launcher.timeout_min)",
    "BadConstraints": "no node has the features it asks for (hydra.launcher.constraint)",
    "DependencyNeverSatisfied": "a job it depends on has failed",
    "InvalidAccount": "its account is not one Slurm knows (hydra.launcher.account)",
    "InvalidQOS": "its QOS is not one Slurm knows (hydra.launcher.qos)",
}
"""The reasons a job pends with that no wait will clear, and what each says about the request. (Resources,
Priority, a QOS's running-job limits and the like clear as other jobs end.)"""

FIRST_POLL_S = 1.0
LONGEST_POLL_S = 30.0
"""squeue is asked about the jobs after 1 s, then twice as long after each answer, up to every 30 s: a job that
cannot start shows within seconds, and a long sweep costs the controller one query every half minute."""

SQUEUE_TIMEOUT_S = 30


class SweepJobsNotRun(Exception):
    """The sweep's jobs were cancelled before they could run (or finish): the message is the one line to show."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def wait_for_jobs(jobs: Sequence[Any]) -> None:
    """Until every job (submitit's Job) has ended: its result, or its end without one, is then for
    `job.results()` to tell. Raises SweepJobsNotRun, once the jobs are cancelled, when one can never start or on
    Ctrl-C (exit code 130)."""
    shown: dict[str, tuple[str, str]] = {}
    pause = FIRST_POLL_S
    try:
        while not all(job.done() for job in jobs):
            time.sleep(pause)
            pause = min(2 * pause, LONGEST_POLL_S)
            queue = queued(jobs)
            if queue is None:  # squeue did not answer: submitit's own wait goes on
                continue
            for job in jobs:
                state = queue.get(job.job_id)
                if state is None or state == shown.get(job.job_id):
                    continue
                shown[job.job_id] = state
                log.info("Slurm job %s: %s", job.job_id, state[0] if state[1] == "None" else f"{state[0]} ({state[1]})")
                if state[0] == "PENDING" and state[1] in NEVER_STARTS:
                    cancel(jobs)
                    raise SweepJobsNotRun(f"Slurm job {job.job_id} can never start, pending for {state[1]}: "
                                          f"{NEVER_STARTS[state[1]]}; cancelled the sweep's {len(jobs)} job(s)")
            if not any(job.job_id in queue for job in jobs):
                return  # every job has left the queue, some perhaps without a result (cancelled, failed)
    except KeyboardInterrupt:
        cancel(jobs)
        raise SweepJobsNotRun(f"Ctrl-C: cancelled the sweep's {len(jobs)} Slurm job(s) "
                              f"({', '.join(job.job_id for job in jobs)}); a running one saves last.pt as it stops, and the "
                              "sweep run again in the same hydra.sweep.dir carries it on", exit_code=130) from None


def queued(jobs: Sequence[Any]) -> Optional[dict[str, tuple[str, str]]]:
    """squeue's (state, reason) of each job still in the queue, by job id ("4242_0" for an array's task); None when
    squeue is missing or fails."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    array_ids = sorted({job.job_id.split("_")[0] for job in jobs})
    try:
        answer = subprocess.run([squeue, "--noheader", "--array", "--format=%i|%T|%r", f"--jobs={','.join(array_ids)}"],
                                capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:  # (also when every job has left the queue, on some Slurm versions: "Invalid job id")
        return {} if "Invalid job id" in answer.stderr else None
    rows = (line.split("|") for line in answer.stdout.splitlines())
    return {row[0]: (row[1], row[2]) for row in rows if len(row) == 3}


def cancel(jobs: Sequence[Any]) -> None:
    """scancel every job (their arrays whole), in one call; a running `train` gets SIGTERM and saves last.pt."""
    array_ids = sorted({job.job_id.split("_")[0] for job in jobs})
    scancel = shutil.which("scancel")
    if scancel is None:
        log.warning("scancel is not on PATH: Slurm jobs %s are left in the queue", ", ".join(array_ids))
        return
    try:
        subprocess.run([scancel, *array_ids], capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("scancel %s failed (%s): the jobs may still be queued", " ".join(array_ids), error)
