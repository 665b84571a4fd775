"""`train trainer.resume=auto` carrying on a run that another `train` started: one killed with SIGKILL at any step
ends bit-identical to a run never stopped, and a resume that fails part-way leaves the run directory as it was.
(tests/unit/training/test_resume.py resumes runs built in this process.)"""

from __future__ import annotations

import json
import signal

import pytest
import torch

from conftest import metrics_rows
from helpers.commands import assert_succeeded, train
from helpers.files import snapshot
from helpers.trained_runs import SMALL, first_run
from pausing_model import MODEL, TrainProcess
from trainer.training.checkpoint import load_checkpoint, save_checkpoint


def test_train_resumed_with_resume_auto_ends_bit_identical_to_an_uninterrupted_run(tmp_path, train_in_this_process):
    whole, part = tmp_path / "whole", tmp_path / "part"
    # The uninterrupted run and the first part run in this process; a fresh `train` process carries the part on, with
    # nothing but its run directory to go by.
    assert_succeeded(train_in_this_process(*SMALL, "trainer.max_epochs=4", f"hydra.run.dir={whole}", cwd=tmp_path))
    assert_succeeded(train_in_this_process(*SMALL, "trainer.max_epochs=2", f"hydra.run.dir={part}", cwd=tmp_path))
    resumed = train(*SMALL, "trainer.max_epochs=4", "trainer.resume=auto", f"hydra.run.dir={part}", cwd=tmp_path)
    assert_succeeded(resumed)
    assert "resumed from" in resumed.stdout + resumed.stderr
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    actual = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert metrics_rows(part) == metrics_rows(whole) and len(metrics_rows(whole)) == 4


# --- kill -9 at any step ----------------------------------------------------------------------------------------

KILLABLE = (*SMALL, "data=xor", "data.batch_size=70", MODEL, "model.dropout=0.2", "scheduler=cosine",
            "trainer.max_epochs=3", "trainer.checkpoint.every_n_steps=3")
"""xor's 700 training samples in batches of 70 (xor: no scikit-learn to import in each process): 10 steps an
epoch, 30 in all; last.pt after every 3rd step and at each epoch's end. Dropout and the per-step cosine schedule
make any state a resume forgets show in the parameters."""


def test_train_killed_with_sigkill_at_three_steps_and_resumed_ends_bit_identical(tmp_path, train_in_this_process):
    # The run never killed, in this process (PAUSE_AT_STEP is not set here: it runs through).
    assert_succeeded(train_in_this_process(*KILLABLE, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path))
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.pt"
    # (pause at this training step of the new process, what last.pt then holds: global step, epoch, position)
    kills = [
        (6, (3, 0, 3)),   # mid-epoch 1: step 6 running, last saved after step 3
        (8, (10, 1, 0)),  # resumed at step 3, so step 11 runs: the first of epoch 2, just after epoch 1's save
        (15, (24, 2, 4)),  # resumed at step 10, so step 25 runs: mid-epoch 3, just after the save of step 24
    ]
    for number, (pause_at, (step, epoch, position)) in enumerate(kills):
        process = TrainProcess(*KILLABLE, "trainer.resume=auto", f"hydra.run.dir={run_dir}", pause_at=pause_at,
                               folder=tmp_path / f"process-{number}")
        process.wait_until_paused()
        process.process.kill()  # SIGKILL: no handler runs, nothing is flushed
        assert process.wait() == -signal.SIGKILL
        state = load_checkpoint(last)
        assert (state["engine"]["global_step"], state["batcher"]["epoch"], state["batcher"]["position"]) == (
            step, epoch, position)

    final = TrainProcess(*KILLABLE, "trainer.resume=auto", f"hydra.run.dir={run_dir}", folder=tmp_path / "final")
    assert final.wait() == 0, final.stderr
    expected = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    actual = load_checkpoint(last)["model"]
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert metrics_rows(run_dir) == metrics_rows(tmp_path / "whole") and len(metrics_rows(run_dir)) == 3
    assert json.loads((run_dir / "summary.json").read_text())["test"] == json.loads(
        (tmp_path / "whole" / "summary.json").read_text())["test"]


# --- a resume that fails part-way -------------------------------------------------------------------------------

def without_the_torch_rng_state(state: dict) -> None:
    del state["rng"]["torch"]


def with_an_optimizer_state_of_two_groups(state: dict) -> None:
    state["optimizer"]["param_groups"] *= 2


def with_the_batcher_position_missing(state: dict) -> None:
    del state["batcher"]["position"]


def with_metrics_that_are_no_table(state: dict) -> None:
    state["metrics"] = [{"epoch": 1}, ["not", "a", "row"]]


def with_an_epoch_that_is_no_count(state: dict) -> None:
    state["engine"]["epoch"] = "1"


@pytest.mark.parametrize("damage", [without_the_torch_rng_state, with_an_optimizer_state_of_two_groups,
                                    with_the_batcher_position_missing, with_metrics_that_are_no_table,
                                    with_an_epoch_that_is_no_count])
def test_a_resume_that_fails_part_way_leaves_the_run_directory_as_it_was(run_dir, train_in_this_process, damage):
    last = first_run(run_dir)  # a checkpoint of this config, but its state cannot be taken up whole
    state = load_checkpoint(last)
    damage(state)
    save_checkpoint(state, last)
    before = snapshot(run_dir)

    result = train_in_this_process(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run_dir}",
                                   cwd=run_dir.parent)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"train: error: trainer.resume: got '{last}', expected a checkpoint whose saved "
                                    f"state fits this run (")
    assert snapshot(run_dir) == before
