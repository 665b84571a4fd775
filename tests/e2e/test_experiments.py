"""The recipes of configs/experiment/ run as a user runs them: each, shrunk to a dev run on the offline stand-ins
of its data set, trains, validates and tests; textbook_one_step reproduces the book's numbers."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import options
from helpers.commands import assert_succeeded

SHRUNK = {"mnist_mlp": (), "fashion_mnist_transformer": (), "cifar10_resnet": ("model.channels=[8,16]",)}
"""The recipes a dev run checks (textbook_one_step is one step already), with what shrinks them further."""


def test_every_recipe_is_checked_here():
    assert sorted([*SHRUNK, "textbook_one_step"]) == options("experiment")


@pytest.mark.parametrize("experiment", sorted(SHRUNK))
def test_a_recipe_runs_as_a_dev_run_on_the_stand_in_data(tmp_path, elsewhere, train_in_this_process, experiment):
    run_dir = tmp_path / "run"
    result = train_in_this_process(f"experiment={experiment}", "trainer.fast_dev_run=true", *SHRUNK[experiment],
                                   f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1 " in log and "test metrics" in log
    assert "trainer.fast_dev_run: the config ran end to end" in log


# Hagan, Demuth, Beale & De Jesus, Neural Network Design (2nd ed.), ch. 11: the weights after one step, as the book
# rounds them.
BOOK_AFTER_ONE_STEP = {"hidden.0.linear.weight": [[-0.265], [-0.420]], "hidden.0.linear.bias": [-0.475, -0.140],
                       "head.weight": [[0.171, -0.0772]], "head.bias": [0.732]}


def test_textbook_one_step_reproduces_the_book_s_backpropagation_example(tmp_path, elsewhere, train_in_this_process):
    run_dir = tmp_path / "run"
    result = train_in_this_process("experiment=textbook_one_step", f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    report = json.loads((run_dir / "inspect.json").read_text())
    assert report["batch"]["x"]["values"] == [[1.0]]
    assert report["batch"]["y"]["values"] == [[pytest.approx(1.7071, abs=1e-4)]]  # t = 1 + sin(pi/4)
    assert report["output_before"]["values"] == [[pytest.approx(0.446, abs=5e-4)]]  # a2
    assert report["loss_before"] == pytest.approx(1.261 ** 2, abs=2e-3)  # MSE of one output: e^2, e = t - a2
    for name, book in BOOK_AFTER_ONE_STEP.items():
        after = torch.tensor(report["parameters"][name]["after"]["values"])
        # Equal to the book's three significant digits: within half a unit of the last one.
        assert torch.allclose(after, torch.tensor(book), rtol=0, atol=5e-4), (name, after)
