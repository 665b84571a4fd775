"""The progress bar is gone from the terminal before anything about the epoch's
training pass is said or done (validation, the "stopped by" warning, a divergence's error), as the bar of 0.1.0
was: it closed with the loop over the batches. A bar still drawn when a line is logged leaves that line glued to
the bar's last state (`epoch 1:  50%|█████     | 5/10 [...]stopped by SIGTERM at epoch 1, step 5; ...`)."""

from __future__ import annotations

import signal

from conftest import compose_config
from helpers.signals import signal_during_step
from trainer.run import build
from trainer.training.observers import ProgressBar

RUN = ("trainer.device=cpu", "data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=2")


def bar_of(run) -> ProgressBar:
    return next(observer for observer in run.engine.observers if isinstance(observer, ProgressBar))


def test_the_bar_is_closed_before_the_epoch_is_validated(run_dir):
    run = build(compose_config(*RUN), run_dir)
    bar, evaluate, open_at_validation = bar_of(run), run.engine.evaluate, []

    def noting_evaluate(batches):
        open_at_validation.append(bar.bar is not None)
        return evaluate(batches)

    run.engine.evaluate = noting_evaluate
    run.engine.fit(run.train, run.val)
    assert open_at_validation == [False, False]


def test_the_bar_is_closed_before_a_signal_s_stop_is_saved_and_said(run_dir):
    run = build(compose_config(*RUN), run_dir)
    bar, stopped_by_signal, open_when_said = bar_of(run), run.engine.stop.stopped_by_signal, []

    def noting_stopped_by_signal(epoch, step, *dev_run):
        open_when_said.append(bar.bar is not None)
        return stopped_by_signal(epoch, step, *dev_run)

    run.engine.stop.stopped_by_signal = noting_stopped_by_signal
    signal_during_step(run.engine, after_step=2, signum=signal.SIGUSR1)
    run.engine.fit(run.train, run.val)
    assert open_when_said == [False]
