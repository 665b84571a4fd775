"""A key of the optimizer or scheduler group that its target does not take is named in one line."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from trainer.config.location import config_dir
from trainer.config import ConfigError
from trainer.training.deferred_calls import deferred_call

CONFIGS = config_dir()


@pytest.mark.parametrize("group, option", [(group, path.stem) for group in ("optimizer", "scheduler")
                                           for path in sorted((CONFIGS / group).glob("*.yaml")) if path.stem != "none"])
def test_an_unknown_key_is_named_with_the_keys_the_target_takes(group, option):
    cfg = compose_config(f"{group}={option}", f"+{group}.bogus=1")[group]
    cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "interval"])
    with pytest.raises(ConfigError) as raised:
        deferred_call(cfg, group)
    assert str(raised.value).startswith(f"{group}.bogus: got 1, expected no such key: ")
    assert ("lr" if group == "optimizer" else "optimizer") in raised.value.allowed


def test_the_keys_of_the_config_and_the_options_reach_the_call():
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})
    optimizer = deferred_call(cfg, "optimizer", momentum=0.9)([torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["momentum"] == 0.9
