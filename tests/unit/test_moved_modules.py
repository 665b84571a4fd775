"""The module paths of version 0.1.0 that users typed and checkpoints hold: each `_target_` of that version's
configs still names its callable, and trainer.moved_modules imports each moved module by its old path, as the module
that now holds its code, and only when it is asked for. (tests/e2e/test_compatibility.py evaluates a checkpoint
saved by 0.1.0.)"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from hydra.utils import get_object

from helpers.commands import assert_succeeded, run_command
from trainer.moved_modules import MOVED_MODULES


TARGETS_OF_VERSION_0_1_0 = [
    "trainer.cli.ValidateBeforeRun", "trainer.data.bundled.digits", "trainer.data.images.cifar10",
    "trainer.data.synthetic.moons", "trainer.data.table.read_csv", "trainer.loggers.TensorBoardLogger",
    "trainer.losses.for_task", "trainer.models.MLP", "trainer.models.DropoutNet", "trainer.models.ResNet",
    "trainer.models.Transformer", "trainer.schedules.warmup_cosine", "trainer.slurm.ResumeAfterRequeue",
]


@pytest.mark.parametrize("target", TARGETS_OF_VERSION_0_1_0)
def test_each_target_path_of_version_0_1_0_still_names_its_callable(target):
    assert callable(get_object(target))


@pytest.mark.parametrize("public, home", sorted(MOVED_MODULES.items()))
def test_a_moved_module_imports_by_its_public_path_as_the_module_that_holds_its_code(public, home):
    moved, holder = importlib.import_module(public), importlib.import_module(home)
    assert moved is holder and moved.__spec__.name == home  # one module: a patch of either is a patch of both


def test_importing_trainer_imports_no_moved_module_before_it_is_asked_for():
    command = ("import sys, trainer, trainer.config; "
               "assert 'torch' not in sys.modules and not set(trainer.moved_modules.MOVED_MODULES) & set(sys.modules)")
    assert_succeeded(run_command([sys.executable, "-c", command], cwd=Path.cwd()))
