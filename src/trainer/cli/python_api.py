"""`train`, `evaluate` and `predict` called from Python (a notebook, a script): `from trainer import train`.

Each takes the command's arguments as strings (`train("model=mlp", "trainer.max_epochs=3")`), composes the same
configs with Hydra's compose API, runs the command's own checks and job, and returns what the command prints: the
run's summary (summary.json, with "run_dir"), the evaluation's record (evaluation.json), the predictions. A user's
mistake raises UsageError carrying the command's one line; nothing calls sys.exit. A run stopped by a signal
(SIGTERM, SIGUSR1, SIGUSR2, or Ctrl-C: a notebook's interrupt) raises Interrupted once last.pt and summary.json are
written, so that a script told to stop does stop. Hydra's global state (GlobalHydra, HydraConfig) and the root
logger are as the caller had them after each call, so a notebook can call train() again; calls from several
threads run one at a time, as that state is the process's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.before_run import check_before_run
from trainer.cli.mistakes import describe_config_error, describe_mistake
from trainer.cli.train import train_job
from trainer.cli.usage import UsageError
from trainer.config import ConfigError, config_dir
from trainer.training import interrupts

MULTIRUN_FLAGS = ("-m", "--multirun")
ONE_CALL_AT_A_TIME = threading.RLock()
"""Hydra's state (GlobalHydra, HydraConfig) is the process's: a second thread's call cleared the first's mid-run,
or failed on it. Calls from several threads wait their turn."""


class Interrupted(Exception):
    """A run stopped by a signal, once it saved last.pt and summary.json: the summary's "run_dir" carries it on
    with trainer.resume=auto."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def train(*overrides: str) -> dict[str, Any]:
    """`train OVERRIDES...` in this process: the run's summary.json as a dict, with "run_dir" added (for
    trainer.inspect=true, inspect.json's report; for trainer.find_lr=true, "suggested_lr" and "lr_find_csv"; for
    trainer.fast_dev_run, which keeps no summary, "fast_dev_run" and the monitored metric's "best_value"). The run
    directory is the command's: hydra.run.dir, by default outputs/DATE/TIME."""
    _refuse_multirun(overrides)
    with _composed("train", overrides) as cfg:
        if cfg.hydra.mode == RunMode.MULTIRUN:  # hparams_search=optuna: a sweep
            raise UsageError("a sweep (hparams_search=...) runs only from the command: train -m ...")
        with read_write(cfg.hydra), open_dict(cfg.hydra):  # as the command says it (hydra.yaml)
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        check_before_run(cfg)
        run_dir = Path(os.path.abspath(cfg.hydra.run.dir))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        job_cfg = _without_hydra(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        with _job_logging(cfg, run_dir):
            try:
                value = train_job(job_cfg)
            except interrupts.Interrupted as stop:
                if cfg.trainer.fast_dev_run:  # its last.pt and summary went with its scratch folder
                    raise Interrupted(f"train: {stop}: trainer.fast_dev_run keeps nothing; call train() again to "
                                      f"check the config", {"run_dir": str(run_dir)}) from None
                summary = _run_record(run_dir)
                raise Interrupted(f"train: {stop}: last.pt and summary.json are saved in {run_dir}; "
                                  f"train(..., 'hydra.run.dir={run_dir}', 'trainer.resume=auto') carries the run on",
                                  summary) from None
    settings = job_cfg.trainer
    if settings.find_lr:
        return {"suggested_lr": None if math.isnan(value) else value, "lr_find_csv": str(run_dir / "lr_find.csv"),
                "run_dir": str(run_dir)}
    if settings.fast_dev_run:
        return {"fast_dev_run": int(settings.fast_dev_run), "best_value": value, "run_dir": str(run_dir)}
    return _run_record(run_dir)


def evaluate(*overrides: str) -> dict[str, Any]:
    """`evaluate OVERRIDES...` (ckpt_path=... and the rest) in this process: the record evaluation.json holds (the
    test metrics under "test"; for classifiers the confusion matrix), and the files written under "written"."""
    from trainer.inference import evaluation

    return _checkpoint_command("evaluate", overrides, evaluation.evaluated)


def predict(*overrides: str) -> list[dict[str, Any]]:
    """`predict OVERRIDES...` (ckpt_path=..., input=...) in this process: a dict per sample, its name under "sample",
    then "predicted" and "probabilities" (classifiers) or "values" (regression). output=FILE also writes the CSV."""
    from trainer.inference import prediction

    return [asdict(each) for each in _checkpoint_command("predict", overrides, prediction.predicted)]


def _checkpoint_command(command: str, overrides: tuple[str, ...], work: Callable[[DictConfig], Any]) -> Any:
    _refuse_multirun(overrides, command)
    with _composed(command, overrides) as cfg:
        HydraConfig.instance().set_config(cfg)  # trust reads the config sources the command was given
        try:
            return work(_without_hydra(cfg))
        except (ConfigError, InstantiationException) as error:
            raise UsageError(describe_mistake(error, command)) from None


def _refuse_multirun(overrides: tuple[str, ...], command: str = "train") -> None:
    for override in overrides:
        if not isinstance(override, str):
            raise TypeError(f"{command}() takes the command's arguments as strings (KEY=VALUE), got {override!r}")
        if override in MULTIRUN_FLAGS:
            raise UsageError(f"{override}: a sweep runs only from the command ({command} -m ...), not from Python")


@contextlib.contextmanager
def _composed(command: str, overrides: tuple[str, ...]) -> Iterator[DictConfig]:
    """configs/COMMAND.yaml composed with `overrides`, Hydra's settings included; a composition error is a
    UsageError in the command's one line. GlobalHydra and HydraConfig are put back as they were afterwards: a
    caller's own initialized Hydra (which initialize_config_dir refuses to replace) is set aside meanwhile."""
    with ONE_CALL_AT_A_TIME:
        callers_hydra, callers_config = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(config_dir()), job_name=command, version_base="1.3"):
                try:
                    cfg = compose(config_name=command, overrides=list(overrides), return_hydra_config=True)
                except (HydraException, OmegaConfBaseException) as error:
                    raise UsageError(describe_config_error(error, command)) from None
                yield cfg
        finally:
            HydraConfig.instance().cfg = callers_config
            if callers_hydra is not None:
                GlobalHydra.instance().initialize(callers_hydra)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config, as Hydra hands it to a command's function: without the hydra node."""
    job_cfg = copy.deepcopy(cfg)
    with read_write(job_cfg), open_dict(job_cfg):
        del job_cfg["hydra"]
    return job_cfg


@contextlib.contextmanager
def _job_logging(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """What Hydra's job_logging sets up for the command: INFO and above to the run's log file (created by the first
    line, as train.yaml asks) and to stdout, in the format train.yaml gives. A caller whose root logger already has
    handlers gets the lines through them instead of stdout. The root logger is put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    formatter = logging.Formatter(cfg.hydra.job_logging.formatters.simple.format)
    added = [logging.FileHandler(run_dir / f"{cfg.hydra.job.name}.log", delay=True)]
    if not handlers:
        added.append(logging.StreamHandler(sys.stdout))
    for handler in added:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def _run_record(run_dir: Path) -> dict[str, Any]:
    """summary.json of the run in `run_dir` (or inspect.json, for trainer.inspect), with "run_dir"."""
    path = run_dir / "summary.json"
    if not path.exists():
        path = run_dir / "inspect.json"
    return {**json.loads(path.read_text()), "run_dir": str(run_dir)}
