"""The `_target_` paths of 0.1.0 are the names a user sees and types, not only names
that import. Hydra's errors name a target by its object's module, and `trust=[...]` is checked against the module
an object was defined in: before the moves both were the path the config holds (trainer.losses.for_task), after
them the module that now holds the code (trainer.training.losses.for_task). So the command line's own advice,
`trust=[trainer.losses.for_task]`, was refused, and a mistake named a path that is in no config."""

from __future__ import annotations

import pytest
from hydra.utils import get_object

from helpers.commands import assert_succeeded

PUBLIC_TARGETS = ["trainer.losses.for_task", "trainer.schedules.warmup_cosine",
                  "trainer.loggers.TensorBoardLogger", "trainer.slurm.ResumeAfterRequeue"]
RUN = ("data=xor", "model.hidden_sizes=[4]", "trainer.max_epochs=1", "trainer.device=cpu", "trainer.curves=false")


@pytest.mark.parametrize("target", PUBLIC_TARGETS)
def test_each_moved_target_names_itself_by_the_path_configs_hold(target):
    found = get_object(target)
    assert f"{found.__module__}.{found.__qualname__}" == target


def test_a_mistake_in_a_moved_target_s_arguments_names_the_path_of_the_config(run_dir, train_in_this_process):
    result = train_in_this_process(*RUN, "loss=auto", "+loss.bogus=1", f"hydra.run.dir={run_dir}",
                                   cwd=run_dir.parent)
    assert result.returncode == 2
    assert result.stderr.startswith("train: error: Error in call to target 'trainer.losses.for_task': TypeError: ")


def test_trust_of_a_moved_target_by_the_path_the_refusal_names_is_taken(tmp_path, train_in_this_process):
    run_dir = tmp_path / "run"
    # The loss option says torch's BCEWithLogitsLoss; the command line put loss=auto's function in its place.
    assert_succeeded(train_in_this_process(*RUN, "loss=bce", "loss._target_=trainer.losses.for_task",
                                           "+loss.task=binary", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    checkpoint = run_dir / "checkpoints" / "best.pt"
    evaluate = ("device=cpu", f"ckpt_path={checkpoint}", f"output_dir={tmp_path / 'evaluation'}")
    refused = train_in_this_process(*evaluate, cwd=tmp_path, command="evaluate")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("say so on the command line: trust=[trainer.losses.for_task])")
    for trusted in ("trust=[trainer.losses.for_task]", "trust=[trainer.losses.*]"):
        assert_succeeded(train_in_this_process(*evaluate, trusted, cwd=tmp_path, command="evaluate"))
