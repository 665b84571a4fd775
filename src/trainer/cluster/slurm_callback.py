"""Sweeps on Slurm through hydra-submitit-launcher (`train -m hydra/launcher=slurm`) whose jobs carry on after a
requeue.

A job nearing its time limit gets SIGUSR2 from Slurm; `train` saves last.pt and hands the signal to submitit,
which requeues the job (so does Slurm itself with a preempted job where PreemptMode is REQUEUE). The job comes
back under the same job id and runs the same call again: the same overrides, and the same job directory, since
Hydra resolves the sweep directory's ${now:...} from the cache of the config submitit pickled with the job. What
makes it carry on rather than be refused (a new run in a directory that holds checkpoints) is
`trainer.resume=auto`, which this callback adds to every job's overrides; a first start finds no last.pt there
and begins from scratch.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

RESUME_KEY = "trainer.resume"


class ResumeAfterRequeue(Callback):
    """configs/hydra/launcher/slurm.yaml installs it. Hydra calls on_multirun_start before the sweeper reads the
    command's overrides (hydra.overrides.task) to make the jobs' overrides, so one added here reaches every job,
    with the basic sweeper and with Optuna's. A trainer.resume the user gave is left as it is."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = config.hydra.overrides.task
        given = OverridesParser.create().parse_overrides(list(overrides))
        if all(override.key_or_group != RESUME_KEY for override in given):
            with read_write(overrides):
                overrides.insert(0, f"{RESUME_KEY}=auto")


# hydra/launcher=slurm's callback of 0.1.0 (trainer.moved_modules): Hydra's errors and `trust` name it by that path.
ResumeAfterRequeue.__module__ = "trainer.slurm"
