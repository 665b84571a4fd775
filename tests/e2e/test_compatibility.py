"""What earlier versions wrote keeps working after the code moves: a checkpoint saved by version 0.1.0
(tests/fixtures/digits_mlp_v0.1.0.pt, from `train trainer.max_epochs=2 model.hidden_sizes=[16] loss=auto
scheduler=cosine`) evaluates to the accuracy it had. (tests/unit/test_moved_modules.py checks the `_target_` paths of
that version's configs.)"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers.commands import assert_succeeded, run_command

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_a_checkpoint_of_version_0_1_0_evaluates_to_the_accuracy_it_had(tmp_path):
    checkpoint = tmp_path / "best.pt"
    shutil.copyfile(FIXTURES / "digits_mlp_v0.1.0.pt", checkpoint)
    evaluate = shutil.which("evaluate", path=str(Path(sys.executable).parent))
    result = run_command([evaluate, f"ckpt_path={checkpoint}"], cwd=tmp_path)
    assert_succeeded(result)
    evaluation = json.loads((tmp_path / "evaluation" / "best" / "evaluation.json").read_text())
    assert evaluation["test"]["accuracy"] == pytest.approx(0.2730, abs=1e-4)  # as version 0.1.0 tested it

