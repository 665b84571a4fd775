"""`train-plot` as a user runs it: several runs' curves on one figure. (tests/unit/observe/test_curves.py draws the
curves, tests/unit/cli/test_plot.py checks the command's mistakes.)"""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.commands import assert_succeeded, run_command
from helpers.files import made_up_rows, panels_size, png_size, write_metrics_csv


TRAIN_PLOT = Path(sys.executable).parent / "train-plot"


def test_train_plot_draws_runs_on_one_figure(tmp_path):
    write_metrics_csv(tmp_path / "runs" / "sgd", made_up_rows(epochs=3))
    write_metrics_csv(tmp_path / "runs" / "adam", made_up_rows(epochs=5, regression=True))

    result = run_command([str(TRAIN_PLOT), "runs/sgd", "runs/adam", "--output", "both.png"], cwd=tmp_path)

    assert_succeeded(result)
    assert result.stdout == "Learning curves of 2 runs: both.png\n"
    # Six panels in 2 rows of 3: both losses, accuracy (sgd), R² and RMSE (adam), learning rate.
    assert png_size(tmp_path / "both.png")[0] == panels_size(columns=3)[0]
