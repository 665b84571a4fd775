"""What each key of the other config groups (data, model, loss, optimizer, scheduler, logger) accepts: the `RULES`
table that `validate` checks a composed config against, and the `Rule`s it is made of, which modules that read
settings of their own check them with too."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from trainer.vocabulary import TASKS


@dataclass(frozen=True)
class Rule:
    """What one key of a component config accepts."""

    accepts: Callable[[Any], bool]
    allowed: str


def is_finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: an int too large for one (10**400) is not."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # math.isfinite converts an int to a float first
        return False


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = Rule(lambda v: _integer(v) and v > 0, "an integer >= 1")
NON_NEGATIVE_INT = Rule(lambda v: _integer(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: is_finite_number(v) and v > 0, "a number > 0")
NON_NEGATIVE = Rule(lambda v: is_finite_number(v) and v >= 0, "a number >= 0")
PROBABILITY = Rule(lambda v: is_finite_number(v) and 0 <= v < 1, "a number in [0, 1)")
OPEN_FRACTION = Rule(lambda v: is_finite_number(v) and 0 < v < 1, "a number in (0, 1)")
FACTOR = Rule(lambda v: is_finite_number(v) and 0 < v <= 1, "a number in (0, 1]")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
INT_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and all(_integer(n) and n > 0 for n in v),
                "a list of integers >= 1, e.g. [128,64]")
BETAS = Rule(lambda v: isinstance(v, (list, tuple)) and len(v) == 2
             and all(is_finite_number(b) and 0 <= b < 1 for b in v),
             "two numbers in [0, 1), e.g. [0.9,0.999]")


def _choice(*options: str) -> Rule:
    return Rule(lambda v: v in options, "one of " + ", ".join(options))


def _or_null(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"{rule.allowed}, or null")


def _or_auto(rule: Rule) -> Rule:
    return Rule(lambda v: v == "auto" or rule.accepts(v), f"auto, {rule.allowed}")


TEXT = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
EXISTING_FILE = Rule(lambda v: isinstance(v, str) and os.path.isfile(v), "the path of a file that exists")
EXISTING_FOLDER = Rule(lambda v: isinstance(v, str) and os.path.isdir(v), "the path of a folder that exists")
IMAGE_SIZE = Rule(lambda v: v is None or (_integer(v) and v > 0) or (isinstance(v, (list, tuple)) and len(v) == 2
                                                                     and all(_integer(n) and n > 0 for n in v)),
                  "null (the images' own size), an integer >= 1, or [H,W], e.g. [32,32]")
AUGMENT = Rule(lambda v: v == "auto" or isinstance(v, dict),
               "auto, or {crop_padding: N, horizontal_flip: true|false}")
TEXT_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(n, str) for n in v),
                 "a list of column names, e.g. [age,height]")


# Keys of the component groups (data, model, loss, optimizer, scheduler) and what each accepts. A key a config
# does not have is not checked, and the model keys only for our models (trainer.models), so a user's own
# `_target_` takes its arguments as it likes.
RULES: dict[str, Rule] = {
    "seed": NON_NEGATIVE_INT,
    "data.task": _choice(*TASKS, "auto"),
    "data.batch_size": POSITIVE_INT,
    "data.val_fraction": OPEN_FRACTION,
    "data.test_fraction": _or_null(OPEN_FRACTION),
    "data.split_seed": NON_NEGATIVE_INT,
    "data.standardize": BOOL,
    "data.drop_last": BOOL,
    "data.seed": NON_NEGATIVE_INT,
    "data.n_samples": POSITIVE_INT,
    "data.noise": NON_NEGATIVE,
    "data.pipeline": _choice("device", "dataloader"),
    "data.num_workers": NON_NEGATIVE_INT,
    "data.pin_memory": BOOL,
    "data.root": TEXT,
    "data.download": BOOL,
    "data.path": EXISTING_FILE,
    "data.target": TEXT,
    "data.features": _or_null(TEXT_LIST),
    "data.image_size": IMAGE_SIZE,
    "data.channels": Rule(lambda v: v == "auto" or (_integer(v) and v in (1, 3)), "auto, 1 or 3"),
    "data.cache_dir": _or_null(TEXT),
    "data.skip_damaged": BOOL,
    "data.augment": _or_null(AUGMENT),
    "data.augment.crop_padding": NON_NEGATIVE_INT,
    "data.augment.horizontal_flip": BOOL,
    "model.hidden_sizes": INT_LIST,
    "model.activation": _choice("relu", "tanh", "sigmoid", "gelu"),
    "model.norm": _choice("none", "batchnorm", "layernorm"),
    "model.residual": BOOL,
    "model.init": _choice("default", "he", "xavier"),
    "model.dropout": PROBABILITY,
    "model.d_model": POSITIVE_INT,
    "model.num_heads": POSITIVE_INT,
    "model.num_layers": POSITIVE_INT,
    "model.dim_feedforward": POSITIVE_INT,
    "model.norm_first": BOOL,
    "model.patch_size": _or_null(POSITIVE_INT),
    "model.channels": INT_LIST,
    "model.blocks_per_stage": POSITIVE_INT,
    "loss.label_smoothing": PROBABILITY,
    "loss.beta": POSITIVE,
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.momentum": PROBABILITY,
    "optimizer.nesterov": BOOL,
    "optimizer.alpha": PROBABILITY,
    "optimizer.eps": POSITIVE,
    "optimizer.betas": BETAS,
    "optimizer.lr_decay": NON_NEGATIVE,
    "optimizer.fused": _or_null(BOOL),
    "scheduler.step_size": POSITIVE_INT,
    "scheduler.gamma": FACTOR,
    "scheduler.warmup_steps": NON_NEGATIVE_INT,
    "scheduler.eta_min": NON_NEGATIVE,
    "scheduler.factor": OPEN_FRACTION,
    "scheduler.patience": NON_NEGATIVE_INT,
    "scheduler.interval": _choice("step", "epoch"),
    "logger.every_n_steps": POSITIVE_INT,
    "logger.histograms": BOOL,
    "logger.tracking_uri": TEXT,
    "logger.experiment_name": _or_null(TEXT),
}

IMAGE_FOLDER = "trainer.data.image_folder.image_folder"
RULES_OF_DATA_OPTION: dict[str, dict[str, Rule]] = {
    IMAGE_FOLDER: {"data.path": EXISTING_FOLDER,
                   "data.val_fraction": _or_auto(_or_null(OPEN_FRACTION)),
                   "data.test_fraction": _or_auto(_or_null(OPEN_FRACTION))},
    "trainer.data.synthetic.sine": {"data.val_fraction": _or_null(OPEN_FRACTION)},
}
"""Keys whose rule depends on the data option (its `_target_`), in place of RULES': an image folder's path is a
folder, and its fractions may be auto (its own val/ and test/ folders where it has them); data=sine has its own
validation points."""
