"""Signals at exact moments of a run in this process."""

from __future__ import annotations

import os
import signal

from trainer.training.engine import Engine


def signal_during_step(engine: Engine, after_step: int, signum: signal.Signals = signal.SIGTERM) -> None:
    """This process gets `signum` while `engine` takes the step after `after_step`: the signal arrives during the
    step, which still completes."""
    train_step = engine.train_step

    def step_then_signal(micro_batches, step_samples=None):
        if engine.global_step == after_step:
            os.kill(os.getpid(), signum)
        return train_step(micro_batches, step_samples)

    engine.train_step = step_then_signal
