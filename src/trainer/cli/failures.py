"""Failures that are no mistake of the command line, each ended in one line and exit code 1 instead of a
traceback: a disk that refuses a write, and a Slurm job of a sweep that did not complete."""

from __future__ import annotations

import contextlib
import errno
import re
import sys
from typing import Iterator, Optional

from hydra.errors import InstantiationException

FILE_SYSTEM_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EFBIG,
                        errno.ENAMETOOLONG)
"""The OS errors of a file system that refuses a write (or a name longer than it takes): the command ends in one
line, not a traceback."""


@contextlib.contextmanager
def refused_writes_in_one_line(command: str, advice: str = "") -> Iterator[None]:
    """A disk that is full, read-only or failing is no mistake of the command line: one line naming the file and
    the OS error, and exit code 1. Inside a job, this also keeps Hydra from adding its own report."""
    try:
        yield
    except Exception as caught:
        error = refused_write(caught)
        if error is None:
            raise
        name = errno.errorcode.get(error.errno, str(error.errno))
        where = f" {error.filename}" if error.filename else ""
        print(f"{command}: error: could not write{where}: {error.strerror} ({name}){advice}", file=sys.stderr)
        sys.exit(1)


def refused_write(error: Exception) -> Optional[OSError]:
    """The OSError of a file system refusing a write that `error` is, or that Hydra's instantiate wrapped (a data
    loader writing its cache to a full disk); None for any other error."""
    cause = error.__cause__ if isinstance(error, InstantiationException) else error
    return cause if isinstance(cause, OSError) and cause.errno in FILE_SYSTEM_REFUSALS else None


SUBMITIT_TRACE_RULE = "-" * 22
"""What frames the job's traceback in submitit's FailedJobError."""


def describe_uncompleted_job(error: Exception) -> Optional[str]:
    """One line for submitit's UncompletedJobError, with which `train -m hydra/launcher=slurm` (waiting for every
    job's result) learns that a job ended without one: killed at its time limit once it had been requeued
    hydra.launcher.max_num_timeout times, cancelled, or failed. Its message holds the job's whole error stream or
    traceback: the line names the job, what happened and its log. None for any other error (only the launcher
    imports submitit: without it, there is no such error)."""
    utils = sys.modules.get("submitit.core.utils")
    if utils is None or not isinstance(error, utils.UncompletedJobError):
        return None
    text = str(error)
    # "Job 4242_0 (task: 0) with path DIR/4242_0_0_result.pkl\nhas not produced any output (state: TIMEOUT)"
    no_result = re.search(r"^Job (\S+) \(task: \d+\) with path (\S+)_result\.pkl\n"
                          r"has not produced any output \(state: ([^)]*)\)", text, re.MULTILINE)
    # FailedJobError: "Job (task=0) failed during processing with trace:", the trace between rules, the logs' paths
    failed_log = re.search(r"^  - (\S*?([^/\s]+)_\d+_log\.err)$", text, re.MULTILINE)
    if no_result is not None:
        job, log = no_result.group(1), f"{no_result.group(2)}_log.err"
        what = f"ended without a result (Slurm state {no_result.group(3)})"
    elif failed_log is not None and text.count(SUBMITIT_TRACE_RULE) >= 2:
        job, log = failed_log.group(2), failed_log.group(1)
        trace = text.split(SUBMITIT_TRACE_RULE)[1].strip().splitlines()
        # "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times."
        what = "failed: " + re.sub(r"^(\w+\.)+(?=\w+: )", "", trace[-1] if trace else "(no traceback)")
    else:
        return f"a Slurm job did not complete: {text.splitlines()[0] if text else type(error).__name__}"
    if "timed-out too many times" in what or "TIMEOUT" in what:
        what += ("; it reached its time limit and was not requeued (hydra.launcher.max_num_timeout caps the "
                 "requeues, hydra.launcher.timeout_min sets the limit): the sweep run again in the same "
                 "hydra.sweep.dir carries it on from the last.pt it saved")
    return f"Slurm job {job} {what} (its log: {log})"
