"""trainer.inspect takes one step outside any fit, so the TensorBoard logger has
opened no event file; 0.1.0 logged nothing of that step to it. Now the step's observers include the logger, which
wrote to the file it never opened (AttributeError: 'NoneType' object has no attribute 'add_scalar'): with
logger.every_n_steps=1, and (already in 0.1.0) whenever the step is a gradient health check, as step 1 is by
default."""

from __future__ import annotations

import pytest

from helpers.commands import assert_succeeded

pytest.importorskip("tensorboard")

INSPECT = ("data=xor", "model.hidden_sizes=[4]", "trainer.inspect=true", "trainer.device=cpu", "logger=tensorboard")


@pytest.mark.parametrize("overrides", [
    ("trainer.health.every_n_steps=null", "logger.every_n_steps=1"),  # inspected without error in 0.1.0
    (),  # the default health check of step 1 reported to the logger: a traceback in 0.1.0 too
])
def test_inspect_with_the_tensorboard_logger_shows_its_step(run_dir, train_in_this_process, overrides):
    result = train_in_this_process(*INSPECT, *overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert_succeeded(result)
    assert "Traceback" not in result.stderr
    assert (run_dir / "inspect.json").exists()
