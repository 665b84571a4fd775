"""curves.png: drawn by every run (trainer.curves), and by `draw_run_curves` and `draw_runs_curves` from metrics.csv
rows (for `train-plot`: tests/unit/cli/test_plot.py, tests/e2e/test_train_plot.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from helpers.files import made_up_rows, panels_size, png_size, write_metrics_csv
from trainer.observe.curves import draw_run_curves, draw_runs_curves, read_metrics_csv, run_title
from trainer.run import train


def titles(figure) -> list[str]:
    return [axes.get_title() for axes in figure.axes]


def train_tiny(run_dir: Path, *overrides: str) -> None:
    train(compose_config("trainer.device=cpu", "data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=2",
                         *overrides), run_dir)


def test_a_run_draws_its_curves_png(run_dir):
    train_tiny(run_dir, "trainer.curves=true")

    assert png_size(run_dir / "curves.png") == panels_size(columns=3)  # loss, val accuracy, learning rate
    assert not list(run_dir.glob("*.partial"))


def test_trainer_curves_false_draws_none(run_dir):
    train_tiny(run_dir, "trainer.curves=false")

    assert (run_dir / "metrics.csv").exists()
    assert not (run_dir / "curves.png").exists()


def test_a_regression_run_has_r2_and_rmse_panels_and_its_best_epoch_marked(tmp_path):
    figure = draw_run_curves(made_up_rows(regression=True), tmp_path / "curves.png", best_epoch=3, title="regression")

    assert titles(figure) == ["Loss", "Validation R²", "Validation RMSE", "Learning rate"]
    assert figure.get_suptitle() == "regression"
    for axes in figure.axes:
        assert any(list(line.get_xdata()) == [3, 3] for line in axes.get_lines()), axes.get_title()  # the best epoch
    loss_legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert loss_legend == ["train", "validation", "best epoch 3: 0.4"]
    assert png_size(tmp_path / "curves.png") == panels_size(columns=2, rows=2)


@pytest.mark.parametrize("lr_factor, scale", [(0.1, "log"), (1.0, "linear")], ids=["decays-by-decades", "constant"])
def test_the_learning_rate_is_on_a_log_scale_where_it_spans_decades(tmp_path, lr_factor, scale):
    figure = draw_run_curves(made_up_rows(lr_factor=lr_factor), tmp_path / "curves.png")

    lr_axes = figure.axes[-1]
    assert lr_axes.get_yscale() == scale
    if scale == "linear":
        assert lr_axes.get_ylim()[0] == 0  # a flat learning rate is drawn as such, from 0


def test_a_diverged_epoch_leaves_a_gap_rather_than_stretching_the_axis(tmp_path):
    rows = made_up_rows(epochs=3)
    rows[2] |= {"train_loss": math.inf, "val_loss": math.nan}

    figure = draw_run_curves(rows, tmp_path / "curves.png")

    train_line = figure.axes[0].get_lines()[0]
    assert math.isnan(train_line.get_ydata()[2])
    assert figure.axes[0].get_ylim()[1] < 10


def test_several_runs_share_each_panel_one_labelled_line_each(tmp_path):
    runs = {"optimizer=sgd": made_up_rows(epochs=3, offset=0.1), "optimizer=adam": made_up_rows(epochs=4)}

    figure = draw_runs_curves(runs, tmp_path / "curves.png", best_epochs={"optimizer=sgd": 3, "optimizer=adam": 2},
                              title="sweep")

    assert titles(figure) == ["Training loss", "Validation loss", "Validation accuracy", "Learning rate"]
    for axes in figure.axes:
        assert [line.get_label() for line in axes.get_lines()] == ["optimizer=sgd", "optimizer=adam"]
        assert [len(line.get_xdata()) for line in axes.get_lines()] == [3, 4]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["optimizer=sgd", "optimizer=adam",
                                                                           "best epoch"]
    width, height = png_size(tmp_path / "curves.png")
    assert width == panels_size(columns=2)[0] and height > panels_size(columns=2, rows=2)[1]  # + the legend below


def test_metrics_csv_is_read_as_numbers_up_to_a_line_cut_short(tmp_path):
    write_metrics_csv(tmp_path, made_up_rows(epochs=2))
    with open(tmp_path / "metrics.csv", "a") as file:
        file.write("3,30,0.001,0.3")  # a run writing its third row

    rows = read_metrics_csv(tmp_path / "metrics.csv")

    assert rows == made_up_rows(epochs=2)


@pytest.mark.parametrize("content, problem", [
    (b"epoch,step,lr\n1,10,\xff\n", "('utf-8' codec can't decode byte 0xff"),
    (b"step,lr\n10,0.001\n", "(it has no epoch column)"),
    (b'epoch,step,lr\n1,10,"' + b"1" * 200_000 + b'"\n', "(field larger than field limit (131072))"),
], ids=["not-utf8", "no-epoch-column", "a-field-over-csv-s-limit"])
def test_a_metrics_csv_train_did_not_write_is_a_value_error_naming_it(tmp_path, content, problem):
    (tmp_path / "metrics.csv").write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_metrics_csv(tmp_path / "metrics.csv")
    assert str(error.value).startswith(f"{tmp_path / 'metrics.csv'}: not the metrics.csv train writes {problem}")


def test_the_title_says_what_the_run_trained():
    config = OmegaConf.to_container(compose_config("scheduler=step", "optimizer.lr=0.01"), resolve=True)

    assert run_title(config) == "digits: MLP, Adam lr 0.01, StepLR"

