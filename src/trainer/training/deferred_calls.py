"""The optimizer's and the scheduler's components: configs with `_partial_: true`, which the run completes with
what only it has (the model's parameters, the optimizer, the number of steps).

Hydra checks a partial's keys only when it is called, and then says only that a call failed. A key the target
does not take is a mistake in the config, so it is found when the partial is made, and named in one line."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from trainer.config import ConfigError


def deferred_call(cfg: DictConfig, group: str, **options: Any) -> functools.partial:
    """`cfg` (the config group `group`, or a part of it) as a partial call of its `_target_`, with `options` among
    its keywords; a keyword the target has no parameter for is a ConfigError naming `group.key`."""
    call = instantiate(cfg, **options)
    parameters = inspect.signature(call.func).parameters
    try:
        inspect.signature(call.func).bind_partial(*call.args, **call.keywords)
    except TypeError:
        unknown = next(key for key in call.keywords if key not in parameters)
        names = [name for name, parameter in parameters.items()
                 if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
        raise ConfigError(f"{group}.{unknown}", call.keywords[unknown],
                          f"no such key: {cfg._target_} takes {', '.join(names)}") from None
    return call
