"""A resume that cannot take up the run's records leaves the run directory as it
was. In 0.1.0, health.csv was read before metrics.csv was rewritten; with the observers, MetricsLog.on_resume
rewrote metrics.csv and only then did GradientHealth.on_resume find health.csv unreadable."""

from __future__ import annotations

from helpers.commands import assert_succeeded
from helpers.files import snapshot

RUN = ("model.hidden_sizes=[8]", "data=xor", "trainer.deterministic=true", "trainer.curves=false",
       "trainer.health.every_n_steps=2")


def test_a_resume_that_cannot_read_health_csv_leaves_metrics_csv_and_health_csv_as_they_were(
        run_dir, train_in_this_process):
    assert_succeeded(train_in_this_process(*RUN, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}",
                                           cwd=run_dir.parent))
    with (run_dir / "health.csv").open("ab") as health:
        health.write(b"9,hidden.0.linear.weight,\xff\xfe,1.0,0.1\n")  # not UTF-8: health.csv cannot be read back
    before = snapshot(run_dir)

    result = train_in_this_process(*RUN, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run_dir}",
                                   cwd=run_dir.parent)
    assert result.returncode == 2, result.stderr
    assert "UnicodeDecodeError" in result.stderr
    assert snapshot(run_dir) == before
