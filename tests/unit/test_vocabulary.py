import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import options
from trainer.config import config_dir
from trainer.vocabulary import LOSSES, METRICS, TASKS, USUAL_LOSS, better, measured_metrics


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
