"""The recipes of configs/experiment/: each composes and validates, sets the groups it names, and a value given on
the command line wins over the recipe's."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose_config, options
from trainer.config import TrainerConfig, validate

EXPERIMENTS = options("experiment")


def test_the_recipes_are_the_documented_ones():
    assert EXPERIMENTS == ["cifar10_resnet", "fashion_mnist_transformer", "mnist_mlp", "textbook_one_step"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_recipe_composes_and_validates(experiment):
    assert isinstance(validate(compose_config(f"experiment={experiment}", shrink=False)), TrainerConfig)


@pytest.mark.parametrize("experiment, expected", [
    ("mnist_mlp", {"data._target_": "trainer.data.images.mnist", "model.hidden_sizes": [512, 256],
                   "optimizer._target_": "torch.optim.AdamW", "scheduler._target_": "trainer.schedules.warmup_cosine"}),
    ("fashion_mnist_transformer", {"data._target_": "trainer.data.images.fashion_mnist",
                                   "model._target_": "trainer.models.Transformer", "model.patch_size": 7}),
    ("cifar10_resnet", {"data._target_": "trainer.data.images.cifar10", "model._target_": "trainer.models.ResNet",
                        "optimizer._target_": "torch.optim.SGD", "optimizer.momentum": 0.9, "optimizer.nesterov": True,
                        "optimizer.weight_decay": 5e-4, "optimizer.lr": 0.1, "scheduler.warmup_steps": 700,
                        "loss.label_smoothing": 0.1, "data.augment.crop_padding": 4, "data.batch_size": 128,
                        "trainer.precision": "auto"}),
    ("textbook_one_step", {"data._target_": "trainer.data.synthetic.sine", "data.train_at": [1.0],
                           "model.hidden_sizes": [2], "model.activation": "sigmoid",
                           "optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.1,
                           "loss._target_": "torch.nn.MSELoss", "trainer.inspect": True}),
])
def test_a_recipe_sets_the_groups_it_names(experiment, expected):
    cfg = compose_config(f"experiment={experiment}", shrink=False)
    assert {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key, value in ((key, OmegaConf.select(cfg, key)) for key in expected)} == expected


@pytest.mark.parametrize("override, key, value", [
    ("optimizer.lr=3e-4", "optimizer.lr", 3e-4),
    ("model.hidden_sizes=[64]", "model.hidden_sizes", [64]),
    ("trainer.max_epochs=2", "trainer.max_epochs", 2),
    ("data.batch_size=32", "data.batch_size", 32),
])
def test_the_command_line_wins_over_the_recipe(override, key, value):
    cfg = compose_config("experiment=mnist_mlp", override, shrink=False)
    chosen = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(chosen) if OmegaConf.is_config(chosen) else chosen) == value


def test_a_recipe_overrides_the_defaults_of_the_groups():
    default, recipe = compose_config(shrink=False), compose_config("experiment=mnist_mlp", shrink=False)
    assert (default.trainer.max_epochs, recipe.trainer.max_epochs) == (100, 20)
    assert default.data._target_ == "trainer.data.bundled.digits"
