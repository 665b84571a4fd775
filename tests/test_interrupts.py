"""Stop signals and Slurm requeue: a real `train` process signalled at a known step finishes that step, saves
last.pt, writes its summary and exits with 128 + the signal's number; under Slurm it requeues itself; inside a
host that had handlers of its own (submitit), the host's handlers get the signals once the run is saved."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from pausing_model import MODEL, TrainProcess, wait_until
from trainer.training.checkpoint import load_checkpoint
from trainer.training import interrupts
from trainer.training.interrupts import StopRequests, requeue_slurm_job, slurm_job_preempted

RUN = (MODEL, "data=xor", "model.hidden_sizes=[32]", "data.batch_size=70", "trainer.max_epochs=3")
"""xor's 700 training samples in batches of 70: 10 steps an epoch. (xor, not the default digits: it spares each
process a second or two of scikit-learn.)"""


def fake_scontrol(folder: Path, preempt_time: str = "None") -> Path:
    """An `scontrol` that writes down its arguments, in folder/scontrol.log, and to `show job` answers as Slurm
    does, with the job's PreemptTime: a date while a preemption's grace time runs, None otherwise (scancel)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {folder / "scontrol.log"}
if [ "$1" = show ]; then
    echo "JobId=$3 JobName=train"
    echo "   JobState=RUNNING Reason=None Dependency=(null)"
    echo "   PreemptEligibleTime=2026-11-30T01:00:00 PreemptTime={preempt_time}"
    echo "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T01:00:00"
fi
""")
    script.chmod(0o755)
    return folder / "scontrol.log"


def signal_at_step_7(tmp_path: Path, *signals: signal.Signals, args: tuple[str, ...] = (),
                     env: dict[str, str] | None = None, to_the_group: bool = False) -> TrainProcess:
    """Run `train` to training step 7, send the signals there (to `train`, or to its whole process group, as
    Slurm and a terminal's Ctrl-C do), let the step finish, and wait for the exit."""
    process = TrainProcess(*RUN, *args, f"hydra.run.dir={tmp_path / 'run'}", pause_at=7, folder=tmp_path / "process",
                           env=env)
    process.wait_until_paused()
    for number in signals:
        if to_the_group:
            os.killpg(process.process.pid, number)
        else:
            process.process.send_signal(number)
        if number is signals[0]:  # the handler has run once it has logged
            log = tmp_path / "run" / "train.log"
            wait_until(lambda: f"{number.name}: finishing this step" in log.read_text(), "the signal's handler")
    process.go_on()
    process.wait()
    return process


@pytest.mark.parametrize("received", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2],
                         ids=lambda s: s.name)
def test_a_stop_signal_finishes_the_step_saves_last_pt_and_writes_the_summary(tmp_path, received):
    process = signal_at_step_7(tmp_path, received)
    assert process.process.returncode == 128 + received.value, process.stderr
    assert "Traceback" not in process.stderr + process.stdout
    run_dir = tmp_path / "run"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["engine"]["global_step"], state["batcher"]["position"]) == (7, 7)  # step 7 was finished
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"], summary["steps"], summary["test"]) == ("interrupted", 0, 7, {})
    assert f"stopped by {received.name} at epoch 1, step 7; last.pt saved" in (run_dir / "train.log").read_text()


def test_a_resumed_run_reports_the_training_time_of_every_start(tmp_path):
    """The second start's summary counts the first start's time (up to its save at step 7) on top of its own,
    which is at least its epochs' `seconds` in metrics.csv (all three epochs end in the second start)."""
    signal_at_step_7(tmp_path, signal.SIGTERM)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "summary.json").read_text())["starts"] == 1
    first_start_seconds = load_checkpoint(run_dir / "checkpoints" / "last.pt")["engine"]["train_seconds"]
    second = TrainProcess(*RUN, f"hydra.run.dir={run_dir}", "trainer.resume=auto", folder=tmp_path / "second")
    assert second.wait() == 0, second.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "metrics.csv").open() as rows:
        second_start_epochs = sum(float(row["seconds"]) for row in csv.DictReader(rows))
    assert (summary["stop_reason"], summary["epochs"], summary["starts"]) == ("max_epochs", 3, 2)
    assert first_start_seconds > 0
    assert summary["train_seconds"] >= round(first_start_seconds + second_start_epochs, 3) - 0.001


def test_a_signal_to_the_whole_process_group_leaves_the_dataloader_workers_to_the_main_process(tmp_path):
    process = signal_at_step_7(tmp_path, signal.SIGTERM, args=("data.pipeline=dataloader", "data.num_workers=2"),
                               to_the_group=True)
    assert process.process.returncode == 128 + signal.SIGTERM.value, process.stderr
    assert "Traceback" not in process.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("SIGTERM: finishing this step") == 1  # the workers neither died nor answered it
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["engine"]["global_step"] == 7


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    process = signal_at_step_7(tmp_path, signal.SIGINT, signal.SIGINT,
                               args=("trainer.checkpoint.every_n_steps=5",))
    assert process.process.returncode == 128 + signal.SIGINT.value
    assert process.stderr.splitlines()[-1] == ("train: stopped at once by Ctrl-C; checkpoints/last.pt, if written, "
                                               "holds the last state saved")
    assert "Traceback" not in process.stderr
    run_dir = tmp_path / "run"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["engine"]["global_step"] == 5  # not step 7
    assert not (run_dir / "summary.json").exists()


SLURM_JOB = {"SLURM_JOB_ID": "4242"}


def test_under_slurm_with_requeue_sigusr1_saves_then_requeues_the_job(tmp_path):
    calls = fake_scontrol(tmp_path / "bin")
    process = signal_at_step_7(tmp_path, signal.SIGUSR1, args=("trainer.requeue=true",),
                               env={**SLURM_JOB, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert process.process.returncode == 128 + signal.SIGUSR1.value, process.stderr
    assert calls.read_text() == "requeue 4242\n"
    assert "requeued Slurm job 4242" in (tmp_path / "run" / "train.log").read_text()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["engine"]["global_step"] == 7


def test_under_slurm_sigterm_of_a_scancel_saves_but_does_not_requeue(tmp_path):
    """scancel sends SIGTERM too: a cancelled job must stay cancelled. Its PreemptTime is None."""
    calls = fake_scontrol(tmp_path / "bin", preempt_time="None")
    process = signal_at_step_7(tmp_path, signal.SIGTERM, args=("trainer.requeue=true",),
                               env={**SLURM_JOB, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert process.process.returncode == 128 + signal.SIGTERM.value
    assert calls.read_text() == "show job 4242\n"  # asked whether it is a preemption, and no requeue
    assert "requeue" not in (tmp_path / "run" / "train.log").read_text()


def test_under_slurm_sigterm_of_a_preemption_saves_then_requeues_the_job(tmp_path):
    """PreemptMode=REQUEUE with a GraceTime: SIGTERM at once, and the job's PreemptTime set during the grace time.
    A job that ends itself then is not requeued by Slurm: train asks for it."""
    calls = fake_scontrol(tmp_path / "bin", preempt_time="2026-11-30T02:00:00")
    process = signal_at_step_7(tmp_path, signal.SIGTERM, args=("trainer.requeue=true",),
                               env={**SLURM_JOB, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert process.process.returncode == 128 + signal.SIGTERM.value, process.stderr
    assert calls.read_text() == "show job 4242\nrequeue 4242\n"
    log = (tmp_path / "run" / "train.log").read_text()
    assert "SIGTERM: Slurm is preempting job 4242 (PreemptTime=2026-11-30T02:00:00)" in log
    assert "requeued Slurm job 4242" in log
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["engine"]["global_step"] == 7


def test_under_slurm_without_requeue_sigterm_asks_nothing(tmp_path):
    calls = fake_scontrol(tmp_path / "bin", preempt_time="2026-11-30T02:00:00")
    process = signal_at_step_7(tmp_path, signal.SIGTERM,
                               env={**SLURM_JOB, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert process.process.returncode == 128 + signal.SIGTERM.value, process.stderr
    assert not calls.exists()


# --- in-process -------------------------------------------------------------------------------------------------

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
