"""`train-plot`'s mistakes: a folder that is not a run's ends the command with exit code 2 and one line naming it.
(tests/unit/observe/test_curves.py draws the curves, tests/e2e/test_train_plot.py runs the command.)"""

from __future__ import annotations

import pytest

from helpers.files import made_up_rows, write_metrics_csv
from trainer.cli.plot import main as plot_main


@pytest.mark.parametrize("name", ["empty", "x" * 300], ids=["empty", "a-name-too-long-for-the-os"])
def test_train_plot_names_a_folder_without_metrics_csv_and_exits_2(tmp_path, capsys, name):
    write_metrics_csv(tmp_path / "run", made_up_rows())
    (tmp_path / "empty").mkdir()

    with pytest.raises(SystemExit) as exit:
        plot_main([str(tmp_path / "run"), str(tmp_path / name), "--output", str(tmp_path / "curves.png")])

    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"train-plot: error: RUN_DIR: got '{tmp_path / name}', expected a run's folder holding "
                   "metrics.csv (a run writes a row to it at the end of each epoch)\n")
    assert not (tmp_path / "curves.png").exists()


def test_train_plot_names_a_folder_whose_summary_train_did_not_write_and_exits_2(tmp_path, capsys):
    write_metrics_csv(tmp_path / "run", made_up_rows())
    (tmp_path / "run" / "summary.json").write_text("[]")

    with pytest.raises(SystemExit) as exit:
        plot_main([str(tmp_path / "run"), "--output", str(tmp_path / "curves.png")])

    assert exit.value.code == 2
    assert capsys.readouterr().err == (f"train-plot: error: RUN_DIR: got '{tmp_path / 'run'}', expected a run's "
                                       f"folder as train writes it ({tmp_path / 'run' / 'summary.json'}: not the JSON "
                                       f"object train writes (it holds []))\n")
    assert not (tmp_path / "curves.png").exists()
