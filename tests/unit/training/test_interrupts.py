"""Stop signals and Slurm requeue, in this process: StopRequests catches the stop signals while a run trains and,
once it is saved, hands them on to the handlers a host had (submitit); a Slurm job is requeued with scontrol, and
a SIGTERM is told a preemption or a scancel by the job's PreemptTime. (tests/e2e/test_stop_signals.py signals a real
`train` process.)"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from helpers.slurm import fake_scontrol
from trainer.training import interrupts
from trainer.training.interrupts import StopRequests, requeue_slurm_job, slurm_job_preempted


@pytest.fixture
def scontrol_calls(tmp_path, monkeypatch) -> Path:
    calls = fake_scontrol(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_requeue_outside_slurm_says_so_and_calls_nothing(scontrol_calls, caplog):
    requeue_slurm_job()
    assert not scontrol_calls.exists()
    assert "this is not a Slurm job (SLURM_JOB_ID is not set): nothing to requeue" in caplog.text


def test_requeue_of_an_array_task_names_the_task(scontrol_calls, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "501")  # each array task has its own job id, but scontrol wants JOB_TASK
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "500")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    requeue_slurm_job()
    assert scontrol_calls.read_text() == "requeue 500_3\n"


def test_requeue_without_scontrol_says_how_to_carry_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    requeue_slurm_job()
    assert ("scontrol is not on PATH: Slurm job 77 is not requeued; submit it again with trainer.resume=auto"
            in caplog.text)


def test_a_failing_scontrol_is_reported_with_its_message(tmp_path, monkeypatch, caplog):
    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'Invalid job id specified' >&2\nexit 1\n")
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with caplog.at_level(logging.ERROR):
        requeue_slurm_job()
    assert "scontrol requeue 77 failed (exit 1): Invalid job id specified" in caplog.text


def test_a_preemption_is_told_from_a_scancel_by_the_jobs_preempt_time(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    fake_scontrol(tmp_path, preempt_time="2026-11-30T02:00:00")
    assert slurm_job_preempted()
    fake_scontrol(tmp_path, preempt_time="None")
    assert not slurm_job_preempted()
    assert (tmp_path / "scontrol.log").read_text() == "show job 77\nshow job 77\n"
    assert [record.message for record in caplog.records] == [
        "SIGTERM: Slurm is preempting job 77 (PreemptTime=2026-11-30T02:00:00)"]


@pytest.mark.parametrize("answer, said", [
    ("echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1",
     "scontrol show job 77 failed (exit 1: slurm_load_jobs error: Invalid job id specified)"),
    ("echo 'JobId=77 JobName=train'", "scontrol show job 77 failed (its answer has no PreemptTime)"),
    (f"exec {shutil.which('sleep')} 30", "scontrol show job 77 failed (it did not answer within 0.5 s)"),
], ids=["fails", "no-preempt-time", "hangs"])
def test_an_scontrol_that_cannot_tell_means_no_preemption_in_one_line(tmp_path, monkeypatch, caplog, answer, said):
    (tmp_path / "scontrol").write_text(f"#!/bin/sh\n{answer}\n")
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(interrupts, "SCONTROL_TIMEOUT_S", 0.5)
    assert not slurm_job_preempted()
    assert [record.message for record in caplog.records] == [
        f"SIGTERM: {said}, so whether Slurm is preempting the job is unknown: taken for a scancel, not requeued"]


def test_outside_slurm_or_without_scontrol_sigterm_is_no_preemption(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not slurm_job_preempted() and caplog.records == []
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert not slurm_job_preempted()
    assert caplog.messages == ["SIGTERM: scontrol is not on PATH, so whether Slurm is preempting job 77 is unknown: "
                               "taken for a scancel, not requeued"]


def test_stop_requests_catch_the_stop_signals_only_while_entered():
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.received is signal.SIGUSR1  # the first one counts
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C after a stop request: stop at once
            os.kill(os.getpid(), signal.SIGINT)
    assert {number: signal.getsignal(number) for number in before} == before


def test_stop_requests_leave_the_signals_alone_outside_the_main_thread():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def enter():
        with StopRequests():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [before]


@pytest.fixture
def host_handlers():
    """A host's handler for SIGUSR2 (as submitit installs one), Python's own for SIGINT, none for SIGTERM; the
    list of the signals the host's handler got."""
    got = []
    before = {number: signal.getsignal(number) for number in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGUSR2, lambda number, frame: got.append(signal.Signals(number)))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield got
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("sent, hosts_to_answer", [
    ((signal.SIGUSR2,), True),
    ((signal.SIGTERM, signal.SIGUSR2), False),  # preemption: SIGTERM, then the host's signal
    ((signal.SIGINT,), False),
], ids=["host-signal", "term-then-host-signal", "ctrl-c"])
def test_once_saved_each_signal_goes_on_to_the_handler_a_host_had_installed(host_handlers, sent, hosts_to_answer):
    with StopRequests() as requests:
        for number in sent:
            os.kill(os.getpid(), number)
        assert host_handlers == []  # not while training: the run saves first
    assert requests.hand_on_to_host() is hosts_to_answer  # and Python's Ctrl-C handler raised nothing
    assert host_handlers == [signal.SIGUSR2] * (signal.SIGUSR2 in sent)


@pytest.fixture
def submitit_like_handlers():
    """A host's handlers as submitit installs them in a job: SIGUSR2 checkpoints and requeues, SIGTERM only logs;
    the list of the signals each got."""
    got = []
    before = {number: signal.getsignal(number) for number in (signal.SIGUSR2, signal.SIGTERM)}
    for number in before:
        signal.signal(number, lambda number, frame: got.append(signal.Signals(number)))
    yield got
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("preempted, host_gets", [(False, signal.SIGTERM), (True, signal.SIGUSR2)],
                         ids=["scancel", "preemption"])
def test_a_preemptions_sigterm_goes_to_the_hosts_requeueing_handler(submitit_like_handlers, preempted, host_gets):
    """submitit answers SIGTERM with a log line only: a job preempted with a grace time would end and never come
    back. Its time-limit handler tells a preemption from a time-out and requeues either."""
    with StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGTERM)
    assert requests.host_requeues
    assert requests.hand_on_to_host(preempted) is True
    assert submitit_like_handlers == [host_gets]


def test_a_hanging_scontrol_requeue_is_given_up_in_one_line(tmp_path, monkeypatch, caplog):
    (tmp_path / "scontrol").write_text("#!/bin/sh\nexec /bin/sleep 60\n")
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setattr(interrupts, "SCONTROL_TIMEOUT_S", 0.5)
    with caplog.at_level(logging.ERROR):
        requeue_slurm_job()
    assert caplog.messages == ["scontrol requeue 77 did not answer within 0.5 s: the job may not be requeued; submit "
                               "it again with trainer.resume=auto to carry on"]

