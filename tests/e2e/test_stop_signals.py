"""Stop signals and Slurm requeue: a real `train` process signalled at a known step finishes that step, saves
last.pt, writes its summary and exits with 128 + the signal's number; under Slurm it requeues itself.
(tests/unit/training/test_interrupts.py holds StopRequests and the requeue's own tests.)"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from helpers.slurm import fake_scontrol
from pausing_model import MODEL, TrainProcess, wait_until
from trainer.training.checkpoint import load_checkpoint


RUN = (MODEL, "data=xor", "model.hidden_sizes=[32]", "data.batch_size=70", "trainer.max_epochs=3")
"""xor's 700 training samples in batches of 70: 10 steps an epoch. (xor, not the default digits: it spares each
process a second or two of scikit-learn.)"""


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


def assert_stopped_after_step_7(process: TrainProcess, received: signal.Signals, run_dir: Path) -> None:
    """The step the signal came in was finished, last.pt saved there, the summary written, and the exit 128 + the
    signal's number."""
    assert process.process.returncode == 128 + received.value, process.stderr
    assert "Traceback" not in process.stderr + process.stdout
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["engine"]["global_step"], state["batcher"]["position"]) == (7, 7)  # step 7 was finished
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"], summary["steps"], summary["test"]) == ("interrupted", 0, 7, {})
    assert f"stopped by {received.name} at epoch 1, step 7; last.pt saved" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("received", [signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_a_stop_signal_finishes_the_step_saves_last_pt_and_writes_the_summary(tmp_path, received):
    """SIGTERM's case is the first start of the resumed run below, which shares its process."""
    assert_stopped_after_step_7(signal_at_step_7(tmp_path, received), received, tmp_path / "run")


def test_sigterm_stops_like_the_other_signals_and_the_resumed_run_reports_the_training_time_of_every_start(
        tmp_path):
    """The first start, stopped by SIGTERM, is checked as the other stop signals are above (one process spared).
    The second start's summary counts the first start's time (up to its save at step 7) on top of its own,
    which is at least its epochs' `seconds` in metrics.csv (all three epochs end in the second start)."""
    run_dir = tmp_path / "run"
    assert_stopped_after_step_7(signal_at_step_7(tmp_path, signal.SIGTERM), signal.SIGTERM, run_dir)
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
