"""`train`'s checks before Hydra creates the run directory (the ValidateBeforeRun callback): the config, the
device, and the run or sweep directory's path, that no other run is in it and that it holds no other run's
records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.mistakes import quoted_for_hydra
from trainer.cli.usage import UsageError, usage_errors_end
from trainer.config import ConfigError, validate


class ValidateBeforeRun(Callback):
    """Hydra calls this after composing the config and before it creates the run directory. Hydra turns a
    callback's exceptions into warnings and carries on, so a bad config exits here, before anything is written."""

    existing_folder: Optional[Path] = None
    """The deepest folder of the run directory's path that existed before this command (a single run; a sweep
    leaves it None): a run refused once started removes the folders Hydra made below it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with usage_errors_end("train"):
            check_before_run(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with usage_errors_end("train"):
            _same_directory_on_every_rank(config, "sweep")
            _checked_directory(config, "sweep")


def check_before_run(config: DictConfig) -> None:
    """The config, the device, and the run directory, checked before anything is written: a mistake is a
    UsageError."""
    try:
        settings = validate(config)
        from trainer.training.device import resolve_device  # imports torch: only once the config is known good

        resolve_device(settings.device)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    _same_directory_on_every_rank(config, "run")
    folder = _checked_directory(config, "run")
    ValidateBeforeRun.existing_folder = next(path for path in (folder, *folder.parents) if path.exists())
    from trainer.run_directory import refuse_a_directory_in_use, refuse_another_runs_records
    from trainer.training.distributed import from_environment

    if from_environment().rank == 0:  # (the others write nothing there)
        try:
            refuse_a_directory_in_use(folder, "hydra.run.dir")
            refuse_another_runs_records(folder, config, "hydra.run.dir", f"{config.hydra.job.name}.log")
        except ConfigError as error:
            raise UsageError(str(error)) from None


def _checked_directory(config: DictConfig, mode: str) -> Path:
    """hydra.run.dir (or hydra.sweep.dir), absolute, resolved as Hydra will resolve it (${now:...} is cached in the
    config, so it names the same moment). One that cannot be resolved, that holds a `${` (Hydra resolves the run
    directory again where it names the log file), or that is too long for this system is a UsageError: Hydra would
    fail on it with a traceback."""
    from trainer.run_directory import refuse_a_path_too_long

    key = f"hydra.{mode}.dir"
    try:
        folder = Path(os.path.abspath(config.hydra[mode].dir))
    except OmegaConfBaseException as error:
        typed = OmegaConf.to_container(config.hydra[mode], resolve=False)["dir"]
        raise UsageError(str(ConfigError(key, typed, f"a path whose ${{...}} interpolations resolve "
                                                     f"({str(error).splitlines()[0]})"))) from None
    if "${" in str(folder):
        raise UsageError(str(ConfigError(key, str(folder), "a path without ${ in it (Hydra would read it as an "
                                                           "interpolation again when it names the log file)")))
    try:
        refuse_a_path_too_long(folder, key)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return folder


def _same_directory_on_every_rank(config: DictConfig, mode: str) -> None:
    """Under torchrun every process composes the config and resolves ${now:...} itself, a moment apart: rank 0's
    hydra.run.dir (or hydra.sweep.dir) is made every process's, so that a run has one directory, not one per
    process."""
    from trainer.training import distributed  # imports torch: only for a distributed run

    processes = distributed.from_environment()
    if not processes.distributed:
        return
    distributed.start(processes)
    shared = distributed.same_on_every_rank(str(config.hydra[mode].dir))
    with read_write(config.hydra):
        config.hydra[mode].dir = shared
        # A sweep composes each job's config again, from the command line's hydra overrides: the job
        # directories follow this one.
        config.hydra.overrides.hydra.append(f"hydra.{mode}.dir={quoted_for_hydra(shared)}")
