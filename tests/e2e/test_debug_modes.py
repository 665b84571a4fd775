"""The debug modes as a user runs them: trainer.fast_dev_run checks a config in seconds and keeps nothing,
trainer.overfit_batches drives one batch's loss to nearly zero, trainer.limit_*_batches shortens the epochs and the
schedule with them."""

from __future__ import annotations

import pytest

from conftest import metrics_rows
from helpers.commands import assert_succeeded, train


def test_fast_dev_run_runs_one_batch_of_each_split_and_keeps_nothing_but_the_log_and_config(tmp_path, elsewhere,
                                                                                           train_in_this_process):
    run_dir = tmp_path / "run"
    assert_succeeded(train_in_this_process("trainer.fast_dev_run=true", f"hydra.run.dir={run_dir}", cwd=elsewhere))
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", "train.log"]  # no checkpoints, no records
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1 " in log and "epoch 2/" not in log
    assert "trainer.fast_dev_run: the config ran end to end on 1 batch(es)" in log


def test_fast_dev_run_with_a_batch_count_takes_that_many_steps(tmp_path, elsewhere, train_in_this_process):
    run_dir = tmp_path / "run"
    result = train_in_this_process("trainer.fast_dev_run=3", "trainer.max_epochs=5", f"hydra.run.dir={run_dir}",
                                   cwd=elsewhere)
    assert_succeeded(result)
    assert "epoch 1/1 " in (run_dir / "train.log").read_text()
    assert not (run_dir / "fast_dev_run").exists()


@pytest.mark.parametrize("checkpoint_dir", ["ABSOLUTE", "../checkpoints"])
def test_fast_dev_run_keeps_no_checkpoints_wherever_trainer_checkpoint_dir_points(tmp_path, elsewhere,
                                                                                  train_in_this_process,
                                                                                  checkpoint_dir):
    run_dir, outside = tmp_path / "run", tmp_path / "checkpoints_of_mine"
    checkpoint_dir = str(outside) if checkpoint_dir == "ABSOLUTE" else checkpoint_dir
    result = train_in_this_process("trainer.fast_dev_run=true", f"trainer.checkpoint.dir={checkpoint_dir}",
                                   f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", "train.log"]
    assert not outside.exists()


def test_fast_dev_run_with_resume_is_one_line_and_exit_2(tmp_path, elsewhere):
    result = train("trainer.fast_dev_run=true", "trainer.resume=auto", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=elsewhere)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "train: error: trainer.fast_dev_run: got True, expected false when resume=auto (a dev run saves nothing to "
        "continue)"]


def test_overfit_batches_drives_the_loss_of_one_batch_of_digits_below_0_05(tmp_path, elsewhere,
                                                                            train_in_this_process):
    run_dir = tmp_path / "run"
    result = train_in_this_process("trainer.overfit_batches=1", "loss.label_smoothing=0", "optimizer.lr=0.01",
                                   "trainer.max_epochs=15", "trainer.early_stopping.patience=null",
                                   "trainer.curves=false", f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    rows = metrics_rows(run_dir)
    assert [row["step"] for row in rows] == [str(epoch) for epoch in range(1, 16)]  # one batch per epoch
    assert float(rows[-1]["train_loss"]) < 0.05
    # Validation is on that same batch: its loss is the next epoch's training loss, taken before that step.
    assert [row["val_loss"] for row in rows[:-1]] == [row["train_loss"] for row in rows[1:]]


@pytest.mark.parametrize("limits, steps_per_epoch", [
    ((), 20),  # digits: 1,258 training samples in batches of 64
    (("trainer.limit_train_batches=3",), 3),
    (("trainer.limit_train_batches=0.25",), 5),
    (("trainer.limit_train_batches=1",), 1),
])
def test_limit_train_batches_sets_the_steps_of_each_epoch_and_the_schedule_s_length(tmp_path, elsewhere,
                                                                                  train_in_this_process, limits,
                                                                                  steps_per_epoch):
    run_dir = tmp_path / "run"
    result = train_in_this_process(*limits, "trainer.limit_val_batches=1", "trainer.eval_batch_size=50",
                                   "scheduler=cosine", "trainer.max_epochs=2", "trainer.curves=false",
                                   f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    rows = metrics_rows(run_dir)
    assert [int(row["step"]) for row in rows] == [steps_per_epoch, 2 * steps_per_epoch]
    # The cosine schedule spans both (limited) epochs: at the second epoch's start it is half way, at lr / 2.
    assert float(rows[1]["lr"]) == pytest.approx(0.0005)
