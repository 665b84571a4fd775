from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import options
from trainer.config import config_dir
from trainer.vocabulary import (DISTRIBUTION, LOSSES, METRICS, TASKS, USUAL_LOSS, better, install_command,
                                 measured_metrics)


@pytest.mark.parametrize("metric, direction", [("val_loss", "min"), ("val_accuracy", "max"), ("val_mse", "min"),
                                               ("val_rmse", "min"), ("val_r2", "max")])
def test_each_metric_improves_in_its_own_direction(metric, direction):
    assert metric in METRICS and better(metric) == direction


@pytest.mark.parametrize("task", TASKS)
def test_every_task_measures_its_loss_and_has_a_usual_loss_that_trains_it(task):
    assert measured_metrics(task)[0] == "val_loss"
    option, tasks = LOSSES[USUAL_LOSS[task]]
    assert task in tasks and option in options("loss")


@pytest.mark.parametrize("option", [option for option in options("loss") if option != "auto"])
def test_every_loss_option_is_in_the_vocabulary_under_its_own_name(option):
    target = OmegaConf.load(config_dir() / "loss" / f"{option}.yaml")["_target_"]
    assert LOSSES[target][0] == option
    get_class(target)  # a class torch has


def test_the_distribution_name_is_pyproject_s_and_the_install_command_names_it():
    project = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'\nname = "{DISTRIBUTION}"\n' in project
    assert f'"{DISTRIBUTION}[slurm,optuna,tensorboard,onnx]"' in project  # the test extra's own name for itself
    assert install_command("onnx") == 'pip install "hydra-torch-trainer[onnx]"'
