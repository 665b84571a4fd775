"""`train trainer.find_lr=true`: the learning-rate range test as a user runs it. It writes lr_find.csv and lr_find.png,
prints one line with the suggested learning rate and the command that trains with it, and saves nothing else; what
it cannot be combined with is refused in one line before anything is written."""

from __future__ import annotations

import csv
import shlex

import pytest

from helpers.commands import assert_succeeded, train
from helpers.files import PNG_SIGNATURE, png_size
from trainer.observe.curves import DPI
from trainer.observe.lr_find import FIGURE_INCHES

SWEEP = ("data=moons", "trainer.device=cpu", "trainer.find_lr=true")


def test_find_lr_writes_its_csv_and_png_prints_the_command_and_saves_nothing_else(run_dir, train_in_this_process):
    result = train_in_this_process(*SWEEP, "data.batch_size=32", f"hydra.run.dir={run_dir}", cwd=run_dir.parent)

    assert_succeeded(result)
    with open(run_dir / "lr_find.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    lrs = [float(row["lr"]) for row in rows]
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert [int(row["step"]) for row in rows] == list(range(1, len(rows) + 1))
    assert all(a < b for a, b in zip(lrs, lrs[1:])) and lrs[0] == pytest.approx(1e-7)
    assert (run_dir / "lr_find.png").read_bytes().startswith(PNG_SIGNATURE)
    assert png_size(run_dir / "lr_find.png") == (round(FIGURE_INCHES[0] * DPI), round(FIGURE_INCHES[1] * DPI))
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", "lr_find.csv", "lr_find.png", "train.log"]

    line = next(line for line in result.stdout.splitlines() if line.startswith("lr_find: suggested learning rate "))
    suggestion = float(line.split()[4])
    # Measured, 10 epochs of moons with Adam: a test loss of 0.06-0.11 from lr 1e-3 to 5e-2; at 0.15 the first
    # epoch's validation loss is 2.4.
    assert 1e-3 <= suggestion <= 5e-2
    command = shlex.split(line.partition("): ")[2])
    assert command == ["train", "data=moons", "trainer.device=cpu", "data.batch_size=32",
                       f"optimizer.lr={suggestion:.2g}"]  # the run's own overrides, less the sweep's


@pytest.mark.parametrize("combined, key", [
    ("trainer.inspect=true", "trainer.find_lr"),
    ("trainer.resume=auto", "trainer.find_lr"),
    ("trainer.lr_find.max_lr=1e-8", "trainer.lr_find.max_lr"),
])
def test_find_lr_with_what_it_cannot_work_with_is_one_line_and_exit_2(tmp_path, train_in_this_process, combined,
                                                                      key):
    result = train_in_this_process(*SWEEP, combined, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"train: error: {key}: got "), result.stderr
    assert not (tmp_path / "run").exists()


def test_a_training_split_of_no_batches_is_one_line_and_exit_2(tmp_path, train_in_this_process):
    # data.drop_last with fewer samples than a batch: a run trained nothing and reported test metrics, and the sweep
    # waited for ever for a batch (find_lr in a subprocess, whose timeout ends the test should it hang again).
    no_batches = ("data.n_samples=20", "data.batch_size=64", "data.drop_last=true", f"hydra.run.dir={tmp_path / 'run'}")
    for result in (train(*SWEEP, *no_batches, cwd=tmp_path),
                   train_in_this_process(*SWEEP, "trainer.find_lr=false", *no_batches, cwd=tmp_path)):
        assert result.returncode == 2
        assert result.stderr.strip() == ("train: error: data.batch_size: got 64, expected at most the 14 training "
                                         "samples when data.drop_last=true (no training batch is left: the run would "
                                         "train nothing)")
        assert not (tmp_path / "run").exists()
