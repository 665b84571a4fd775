"""The wait for a sweep's Slurm jobs, against stand-ins for squeue and scancel that answer from a script of
states: each job's state said once per change, a job that can never start cancelled with the sweep, Ctrl-C
cancelling the jobs, and a squeue that fails leaving the wait to submitit. (tests/e2e/test_slurm_cluster.py runs
the same on a real cluster.)"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.cluster import slurm_queue
from trainer.cluster.slurm_queue import SweepJobsNotRun, wait_for_jobs


class Job:
    """submitit's Job as the wait uses it: its id, its error log, and done() (its result is there) once squeue has
    been asked `done_after` times, or once the test says so."""

    def __init__(self, job_id: str, folder: Path = Path("/nonexistent"), done_after: float = float("inf")):
        self.job_id = job_id
        self.finished = False
        self.calls, self.done_after = folder / "calls", done_after
        self.paths = SimpleNamespace(stderr=folder / f"{job_id}_log.err")

    def done(self) -> bool:
        calls = int(self.calls.read_text()) if self.calls.exists() else 0
        return self.finished or calls >= self.done_after


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """squeue answers each call with the next of the lines written to answers/N (the last one again once they
    run out); scancel notes its arguments in scancel.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"""#!/bin/bash
n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/calls
answer={tmp_path}/answers/$n; [ -e "$answer" ] || answer={tmp_path}/answers/$(ls {tmp_path}/answers | grep -v status | sort -n | tail -n 1)
[ -s "$answer.status" ] && {{ cat "$answer" >&2; exit "$(cat "$answer.status")"; }}
cat "$answer"
""")
    (bin_dir / "scancel").write_text(f"#!/bin/bash\necho \"$*\" >> {tmp_path}/scancel.log\n")
    for tool in ("squeue", "scancel"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "answers").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(slurm_queue, "FIRST_POLL_S", 0.01)
    monkeypatch.setattr(slurm_queue, "LONGEST_POLL_S", 0.01)
    ctrl_c = signal.getsignal(signal.SIGINT)
    yield tmp_path
    signal.signal(signal.SIGINT, ctrl_c)  # (the wait ignores Ctrl-C once it has cancelled the jobs)


def answer(folder: Path, *states: str, status: int = 0) -> None:
    """squeue's next answer: lines of JOBID|STATE|REASON (or its error message, with an exit status)."""
    number = len(list((folder / "answers").glob("[0-9]*"))) - len(list((folder / "answers").glob("*.status")))
    (folder / "answers" / str(number)).write_text("".join(f"{line}\n" for line in states))
    (folder / "answers" / f"{number}.status").write_text(str(status) if status else "")


def test_each_change_of_a_jobs_state_is_said_once_and_the_wait_ends_when_the_jobs_leave_the_queue(queue, caplog):
    jobs = [Job("7_0", queue, done_after=4), Job("7_1", queue, done_after=5)]
    answer(queue, "7_0|PENDING|Priority", "7_1|PENDING|Priority")
    answer(queue, "7_0|PENDING|Priority", "7_1|PENDING|Priority")
    answer(queue, "7_0|RUNNING|None", "7_1|PENDING|Resources")
    answer(queue, "7_1|RUNNING|None")
    answer(queue)
    with caplog.at_level(logging.INFO, logger="trainer.cluster.slurm_queue"):
        wait_for_jobs(jobs)
    assert caplog.messages == ["Slurm job 7_0: PENDING (Priority)", "Slurm job 7_1: PENDING (Priority)",
                               "Slurm job 7_0: RUNNING", "Slurm job 7_1: PENDING (Resources)",
                               "Slurm job 7_1: RUNNING", "Slurm job 7_0: finished", "Slurm job 7_1: finished"]
    assert not (queue / "scancel.log").exists()


def test_a_job_that_leaves_the_queue_without_a_result_is_named_once_the_others_have_ended(queue, caplog):
    """scancel by hand, or `train` refusing a value inside the job: submitit writes no result, and without sacct
    its own wait would never end. A job missing from one answer only (a requeue's moment) is still waited for."""
    jobs = [Job("3_0", queue), Job("3_1", queue, done_after=6), Job("3_2", queue, done_after=6)]
    (queue / "3_0_log.err").write_text("submitit INFO (...) - Starting with JobEnvironment\n"
                                       "train: error: trainer.max_epochs: got -5, expected an integer >= 1\n"
                                       "srun: error: vm: task 0: Exited with exit code 2\n")
    answer(queue, "3_0|RUNNING|None", "3_1|RUNNING|None", "3_2|RUNNING|None")
    answer(queue, "3_1|RUNNING|None")  # 3_2 missing once: requeued
    answer(queue, "3_1|RUNNING|None", "3_2|PENDING|BeginTime")
    answer(queue, "3_1|RUNNING|None", "3_2|RUNNING|None")
    with caplog.at_level(logging.WARNING, logger="trainer.cluster.slurm_queue"), pytest.raises(SweepJobsNotRun) as raised:
        wait_for_jobs(jobs)
    said = (f"trainer.max_epochs: got -5, expected an integer >= 1 (its log: {queue / '3_0_log.err'})")
    assert str(raised.value) == f"Slurm job 3_0 ended without a result: train: error: {said}"
    assert caplog.messages == [f"Slurm job 3_0 ended without a result: train: error: {said}"]
    assert int((queue / "calls").read_text()) >= 6  # the others were waited for
    assert not (queue / "scancel.log").exists()


@pytest.mark.parametrize("reason", sorted(slurm_queue.NEVER_STARTS))
def test_a_job_that_can_never_start_cancels_the_sweep_in_one_line(queue, reason):
    jobs = [Job("8_0"), Job("8_1"), Job("9_0")]
    answer(queue, "8_0|RUNNING|None", f"8_1|PENDING|{reason}", "9_0|PENDING|Priority")
    with pytest.raises(SweepJobsNotRun) as raised:
        wait_for_jobs(jobs)
    assert str(raised.value) == (f"Slurm job 8_1 can never start, pending for {reason}: "
                                 f"{slurm_queue.NEVER_STARTS[reason]}; cancelled the sweep's 3 job(s)")
    assert raised.value.exit_code == 1
    assert (queue / "scancel.log").read_text() == "8 9\n"  # each array whole, in one call


def test_a_wait_that_clears_is_waited_out(queue):
    jobs = [Job("5_0", queue, done_after=3)]
    answer(queue, "5_0|PENDING|QOSMaxJobsPerUserLimit")
    answer(queue, "5_0|RUNNING|None")
    answer(queue)
    wait_for_jobs(jobs)
    assert not (queue / "scancel.log").exists()


def test_ctrl_c_cancels_the_jobs_and_exits_130(queue):
    jobs = [Job("6_0"), Job("6_1")]
    answer(queue, "6_0|RUNNING|None", "6_1|RUNNING|None")
    threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,)).start()
    with pytest.raises(SweepJobsNotRun) as raised:
        wait_for_jobs(jobs)
    assert raised.value.exit_code == 128 + signal.SIGINT
    assert str(raised.value).startswith("Ctrl-C: cancelled the sweep's 2 Slurm job(s); a running one saves")
    assert (queue / "scancel.log").read_text() == "6\n"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a second Ctrl-C cannot cut the exit short


def test_when_squeue_fails_the_wait_goes_on_until_the_jobs_are_done(queue, caplog):
    jobs = [Job("4_0")]
    answer(queue, "slurm_load_jobs error: Unable to contact slurm controller", status=1)
    calls = queue / "calls"
    threading.Timer(0.3, lambda: setattr(jobs[0], "finished", True)).start()
    wait_for_jobs(jobs)
    assert int(calls.read_text()) >= 2  # asked again and again, never taken for "every job has left"
    assert not (queue / "scancel.log").exists()
    assert [m for m in caplog.messages if "squeue" in m] == [
        "squeue is missing or does not answer: waiting for the Slurm jobs' results without watching the queue (a "
        "job that can never start is not noticed)"]  # said once
