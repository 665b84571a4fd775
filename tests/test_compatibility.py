"""What earlier versions wrote and users typed keeps working after the code moves: a checkpoint saved by
version 0.1.0 (tests/fixtures/digits_mlp_v0.1.0.pt, from `train trainer.max_epochs=2 model.hidden_sizes=[16]
loss=auto scheduler=cosine`) and the `_target_` paths of that version's configs."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from hydra.utils import get_object

from helpers.commands import assert_succeeded, run_command
from trainer.moved_modules import MOVED_MODULES

FIXTURES = Path(__file__).parent / "fixtures"

TARGETS_OF_VERSION_0_1_0 = [
    "trainer.cli.ValidateBeforeRun", "trainer.data.bundled.digits", "trainer.data.images.cifar10",
    "trainer.data.synthetic.moons", "trainer.data.table.read_csv", "trainer.loggers.TensorBoardLogger",
    "trainer.losses.for_task", "trainer.models.MLP", "trainer.models.DropoutNet", "trainer.models.ResNet",
    "trainer.models.Transformer", "trainer.schedules.warmup_cosine", "trainer.slurm.ResumeAfterRequeue",
]


def test_a_checkpoint_of_version_0_1_0_evaluates_to_the_accuracy_it_had(tmp_path):
    checkpoint = tmp_path / "best.pt"
    shutil.copyfile(FIXTURES / "digits_mlp_v0.1.0.pt", checkpoint)
    evaluate = shutil.which("evaluate", path=str(Path(sys.executable).parent))
    result = run_command([evaluate, f"ckpt_path={checkpoint}"], cwd=tmp_path)
    assert_succeeded(result)
    evaluation = json.loads((tmp_path / "evaluation" / "best" / "evaluation.json").read_text())
    assert evaluation["test"]["accuracy"] == pytest.approx(0.2730, abs=1e-4)  # as version 0.1.0 tested it


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
