"""Waiting for a sweep's Slurm jobs (`train -m hydra/launcher=slurm`) as someone at the terminal would want.

submitit's own wait is silent: a job that can never start (more CPUs than any node of its partition has) pends for
ever with nothing said, and Ctrl-C leaves every job in the queue. Here each job's state is said in one line when it
changes (PENDING for Priority, RUNNING), a job that can never start is reported with Slurm's reason and the sweep's
jobs are cancelled, and Ctrl-C cancels them too: nothing stays queued behind a `train -m` that has ended.
"""

from __future__ import annotations

import logging
import shutil
import signal
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
    """Until every job (submitit's Job) has ended, saying each change of a job's state. Raises SweepJobsNotRun:
    once the jobs are cancelled, when one can never start or on Ctrl-C (exit code 130; Ctrl-C is ignored from
    then on, so that a second one cannot cut the cancelling short); and once every job has ended, when one left
    the queue without a result (cancelled, or `train` refused it), which submitit's own wait, without Slurm's
    accounting (sacct), would wait for for ever."""
    shown: dict[str, tuple[str, str]] = {}
    absent: dict[str, int] = {}
    """How many answers of squeue in a row a job was missing from: twice means it has left the queue (once may be
    the moment of a requeue)."""
    ended: dict[str, str] = {}
    """The jobs that left the queue without a result, and what their logs say."""
    pause, squeue_failed, finished = FIRST_POLL_S, False, set()
    try:
        while True:
            running = []
            for job in jobs:
                if job.job_id in ended or job.job_id in finished:
                    continue
                if job.done():
                    finished.add(job.job_id)
                    log.info("Slurm job %s: finished", job.job_id)
                else:
                    running.append(job)
            if not running:
                break
            time.sleep(pause)
            pause = min(2 * pause, LONGEST_POLL_S)
            queue = queued(jobs)
            if queue is None:
                if not squeue_failed:
                    log.warning("squeue is missing or does not answer: waiting for the Slurm jobs' results without "
                                "watching the queue (a job that can never start is not noticed)")
                squeue_failed = True
                continue
            for job in running:
                state = queue.get(job.job_id)
                absent[job.job_id] = 0 if state is not None else absent.get(job.job_id, 0) + 1
                if absent[job.job_id] >= 2 and not job.done():
                    ended[job.job_id] = _last_words(job)
                    log.warning("Slurm job %s ended without a result: %s", job.job_id, ended[job.job_id])
                if state is None or state == shown.get(job.job_id):
                    continue
                shown[job.job_id] = state
                log.info("Slurm job %s: %s", job.job_id, state[0] if state[1] == "None" else f"{state[0]} ({state[1]})")
                if state[0] == "PENDING" and state[1] in NEVER_STARTS:
                    _cancel_ignoring_ctrl_c(jobs)
                    raise SweepJobsNotRun(f"Slurm job {job.job_id} can never start, pending for {state[1]}: "
                                          f"{NEVER_STARTS[state[1]]}; cancelled the sweep's {len(jobs)} job(s)")
    except KeyboardInterrupt:
        _cancel_ignoring_ctrl_c(jobs)
        raise SweepJobsNotRun(f"Ctrl-C: cancelled the sweep's {len(jobs)} Slurm job(s); a running one saves last.pt "
                              "as it stops, and the sweep run again in the same hydra.sweep.dir carries it on",
                              exit_code=130) from None
    if ended:
        first, said = next(iter(ended.items()))
        raise SweepJobsNotRun(f"Slurm job {first} ended without a result: {said}"
                              + (f"; {len(ended) - 1} more of the sweep's {len(jobs)} jobs did too" if len(ended) > 1
                                 else ""))


def _last_words(job: Any) -> str:
    """The line of the job's error log that says why it ended (train's `train: ...` line, else the last one), and
    the log's path."""
    path = job.paths.stderr
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"its log {path} cannot be read (cancelled before it started?)"
    said = next((line for line in reversed(lines) if line.startswith("train: ")), lines[-1] if lines else "")
    return f"{said or 'its log is empty'} (its log: {path})"


def _cancel_ignoring_ctrl_c(jobs: Sequence[Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cancel(jobs)


def queued(jobs: Sequence[Any]) -> Optional[dict[str, tuple[str, str]]]:
    """squeue's (state, reason) of each job still in the queue, by job id ("4242_0" for an array's task); None when
    squeue is missing or fails."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    array_ids = _array_ids(jobs)
    try:
        answer = subprocess.run([squeue, "--noheader", "--array", "--format=%i|%T|%r", f"--jobs={','.join(array_ids)}"],
                                capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:  # (also when every job has left the queue, on some Slurm versions: "Invalid job id")
        return {} if "Invalid job id" in answer.stderr else None
    rows = (line.split("|") for line in answer.stdout.splitlines())
    return {row[0]: (row[1], row[2]) for row in rows if len(row) == 3}


def _array_ids(jobs: Sequence[Any]) -> list[str]:
    """The job ids of the jobs' arrays ("4242" for "4242_0"), each once."""
    return sorted({job.job_id.split("_")[0] for job in jobs})


def cancel(jobs: Sequence[Any]) -> None:
    """scancel every job (their arrays whole), in one call; a running `train` gets SIGTERM and saves last.pt."""
    array_ids = _array_ids(jobs)
    scancel = shutil.which("scancel")
    if scancel is None:
        log.warning("scancel is not on PATH: Slurm jobs %s are left in the queue", ", ".join(array_ids))
        return
    try:
        # In a session of its own: a Ctrl-C at the terminal goes to the whole foreground group, and would stop it.
        subprocess.run([scancel, *array_ids], capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S,
                       start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("scancel %s failed (%s): the jobs may still be queued", " ".join(array_ids), error)
