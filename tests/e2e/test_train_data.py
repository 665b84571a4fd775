"""`train` on the data sets a user brings, end to end: the image sets (a missing folder is one line), CSV tables (the
task inferred from the target; a missing file is one line), and only the chosen set's libraries imported.
(tests/unit/data/ holds the loaders' and build_data's own tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import CompletedProcess
from typing import Callable

import numpy as np
import pytest

from conftest import write_csv_table
from helpers.commands import assert_succeeded, train
from helpers.files import table
from trainer.training.checkpoint import load_checkpoint


# --- the image sets ---------------------------------------------------------------------------------------------

def test_train_without_the_files_and_without_download_exits_2_with_one_line(tmp_path, elsewhere,
                                                                           train_in_this_process):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = train_in_this_process("data=mnist", f"data.root={empty}", "data.download=false",
                                   f"hydra.run.dir={tmp_path / 'run'}", cwd=elsewhere)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"train: error: data.root: got '{empty}'"), result.stderr
    assert f"{empty}/MNIST/raw/" in result.stderr
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("option", ["mnist", "fashion_mnist"])
def test_train_on_an_mnist_set_end_to_end(tmp_path, elsewhere, offline_data_sets, train_in_this_process, option):
    run_dir = tmp_path / "run"
    result = train_in_this_process(f"data={option}", f"data.root={offline_data_sets}", "trainer.max_epochs=2",
                                   "model.hidden_sizes=[32]", f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["test"]["accuracy"] > 0.5
    assert "multiclass: 540 samples to train, 60 to validate, 100 to test" in (run_dir / "train.log").read_text()


# --- CSV tables -------------------------------------------------------------------------------------------------

def test_train_with_a_missing_csv_exits_2_with_one_line_and_writes_nothing(tmp_path, elsewhere):
    run_dir = tmp_path / "run"
    result = train("data=csv", "data.path=missing.csv", "data.target=y", f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "train: error: data.path: got 'missing.csv', expected the path of a file that exists"]
    assert not run_dir.exists()
    assert list(elsewhere.iterdir()) == []


def train_on_csv(train_in_this_process: Callable[..., CompletedProcess], path: str, target: str, tmp_path: Path,
                 elsewhere: Path) -> tuple[Path, dict]:
    """`train data=csv` for 5 epochs, in this process; the run directory and its best checkpoint."""
    run_dir = tmp_path / "run"
    assert_succeeded(train_in_this_process("data=csv", f"data.path={path}", f"data.target={target}",
                                           "trainer.max_epochs=5", f"hydra.run.dir={run_dir}", cwd=elsewhere))
    return run_dir, load_checkpoint(run_dir / "checkpoints" / "best.pt")


def test_train_on_a_regression_csv_infers_the_task(tmp_path, elsewhere, train_in_this_process):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    y = 2 * a - b + rng.normal(0, 0.05, 200)
    path = table(tmp_path / "linear.csv", "a,b,y", [(f"{p:.5f}", f"{q:.5f}", f"{r:.5f}") for p, q, r in zip(a, b, y)])
    run_dir, checkpoint = train_on_csv(train_in_this_process, path, "y", tmp_path, elsewhere)
    assert checkpoint["config"]["data"]["task"] == "regression"
    assert checkpoint["config"]["loss"] == {"_target_": "trainer.losses.for_task", "task": "regression"}
    assert checkpoint["model"]["head.weight"].shape[0] == 1
    assert "data.task=auto: the target 'y' makes this a regression set" in (run_dir / "train.log").read_text()
    test = json.loads((run_dir / "summary.json").read_text())["test"]
    assert set(test) == {"loss", "mse", "rmse", "r2"}
    assert test["r2"] > 0.8


def test_train_on_a_csv_with_text_labels_classifies(tmp_path, elsewhere, train_in_this_process):
    run_dir, checkpoint = train_on_csv(train_in_this_process, str(write_csv_table(tmp_path / "blobs.csv")), "colour",
                                       tmp_path, elsewhere)
    assert checkpoint["config"]["data"]["task"] == "multiclass"
    assert checkpoint["model"]["head.weight"].shape == (3, 128)
    assert json.loads((run_dir / "summary.json").read_text())["test"]["accuracy"] > 0.8


# --- the libraries a data set needs -----------------------------------------------------------------------------

@pytest.mark.parametrize("option, imported", [("mnist", ["torchvision"]), ("csv", ["pyarrow"]),
                                             ("parquet", ["pyarrow"]), ("digits", ["sklearn"])])
def test_only_the_chosen_data_set_s_libraries_are_imported(tmp_path, option, imported):
    """A fresh interpreter trains one epoch; pyarrow, scikit-learn and torchvision are imported only by the sets that
    use them, and pandas by none but scikit-learn (this session's interpreter has them loaded already, hence the
    subprocess). sklearn.datasets imports pandas where it is installed, and pandas imports pyarrow where it is."""
    import importlib.util
    import subprocess
    import sys

    if option == "digits" and importlib.util.find_spec("pandas") is not None:
        imported = sorted({*imported, "pandas", "pyarrow"})

    from conftest import STAND_IN_ROOT

    overrides = [f"data={option}", "trainer.max_epochs=1", "trainer.curves=false", f"hydra.run.dir={tmp_path / 'run'}"]
    if option in ("csv", "parquet"):
        overrides += [f"data.path={STAND_IN_ROOT / ('table.' + option)}", "data.target=colour"]
    script = ("import sys; from trainer.cli import train; sys.argv = ['train', *sys.argv[1:]]\n"
              "try:\n    train()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
              "print(sorted(name for name in ('pandas', 'pyarrow', 'sklearn', 'torchvision') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script, *overrides], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(imported)
