"""The `train` command and `python -m trainer`: Hydra composes the config, ValidateBeforeRun (before_run)
validates it, `trainer.run` runs it, in a run directory looked after by during_run. A mistake ends the command in
one line and exit code 2 (mistakes); a disk that refuses a write or a Slurm job that did not complete, in one line
and exit code 1 (failures); a signal, with 128 + its number.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.during_run import (
    finished_before,
    run_dir_left_as_found_on_a_mistake,
    save_run_config,
    sole_owner_of,
    work_folder,
)
from trainer.cli.failures import describe_uncompleted_job, refused_writes_in_one_line
from trainer.cli.mistakes import describe_config_error
from trainer.cli.usage import exit_with_usage_error, usage_errors_end
from trainer.config import config_dir

RESUME_ADVICE = ("; the checkpoints written before it are whole: once it can write, trainer.resume=auto carries the "
                 "run on")
BUILD_ADVICE = ("; nothing was trained yet: make room there (an image folder's cache: or set data.cache_dir to a "
                "place that has it) and run the command again")


def train() -> None:
    """Console entry point of `train` and `python -m trainer`."""
    try:
        _train_command()
    except SystemExit as exit:
        _end_a_distributed_process(exit.code)
        raise
    except BaseException:
        if _in_a_distributed_run():  # its traceback, as the interpreter would print it on its way out
            traceback.print_exc()
            _end_a_distributed_process(1)
        raise
    _end_a_distributed_process(0)


def _in_a_distributed_run() -> bool:
    distributed = sys.modules.get("trainer.training.distributed")  # (imported where a run has several processes)
    return distributed is not None and distributed.joined()


def _end_a_distributed_process(code: Optional[int | str]) -> None:
    """A process of a torchrun or srun run ends here with `code` (sys.exit's), without Python's interpreter
    teardown (its exit handlers run, its streams are flushed): see distributed.end_process. Returns for a lone
    process, or one whose process group is another program's."""
    if not _in_a_distributed_run():
        return
    if isinstance(code, str):  # sys.exit(MESSAGE): printed, and exit code 1
        print(code, file=sys.stderr)
    sys.modules["trainer.training.distributed"].end_process(code if isinstance(code, int) else 0 if code is None else 1)


def _train_command() -> None:
    # Hydra prints its own multi-line report of a config error unless asked to raise it (whatever the user's
    # environment says: HYDRA_FULL_ERROR=0 too); we make it one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    logging.raiseExceptions = False  # a full disk: train.log's lines are lost, not each one a traceback on stderr
    try:
        with refused_writes_in_one_line("train"):  # (Hydra's own: the run directory on a read-only disk)
            _train_app()
    except (HydraException, OmegaConfBaseException) as error:
        exit_with_usage_error("train", describe_config_error(error))
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one during it
        print("train: stopped at once by Ctrl-C; checkpoints/last.pt, if written, holds the last state saved",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except Exception as error:
        slurm_queue = sys.modules.get("trainer.cluster.slurm_queue")  # (imported by hydra/launcher=slurm only)
        if slurm_queue is not None and isinstance(error, slurm_queue.SweepJobsNotRun):
            print(f"train: {'' if error.exit_code == 128 + signal.SIGINT else 'error: '}{error}", file=sys.stderr)
            sys.exit(error.exit_code)
        uncompleted = describe_uncompleted_job(error)
        if uncompleted is None:
            raise
        print(f"train: error: {uncompleted}", file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_app(cfg: DictConfig) -> float:
    from trainer.training.distributed import from_environment
    from trainer.training.interrupts import Interrupted

    rank = from_environment().rank
    if rank != 0:
        _only_warnings_to_stderr(rank)
    with usage_errors_end("train"):  # inside the job, so that Hydra adds no report of its own
        try:
            return train_job(cfg)
        except Interrupted as stop:  # last.pt and the summary are written; the exit code says which signal
            sys.exit(stop.exit_code)


def train_job(cfg: DictConfig) -> float:
    """One run in the run directory HydraConfig names (`train`'s job, and trainer.train's): the directory locked,
    nothing done if it finished before, built, its config saved, executed. Returns the best value of the monitored
    metric; a mistake is a UsageError, a signal that stopped the run Interrupted."""
    from trainer.run import build, execute
    from trainer.training.distributed import from_environment, wait_for_every_rank

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    composed = copy.deepcopy(cfg)  # as composed: building fills in what data.task=auto found
    rank = from_environment().rank
    with refused_writes_in_one_line("train", RESUME_ADVICE), sole_owner_of(run_dir, composed, rank) as lock:
        finished = finished_before(composed, run_dir)  # a sweep started again: this job is done
        if finished is not None:
            return finished
        with work_folder(run_dir, cfg.trainer.fast_dev_run, rank) as work_dir:
            with run_dir_left_as_found_on_a_mistake(run_dir, clean_up=rank == 0, lock=lock), \
                    refused_writes_in_one_line("train", BUILD_ADVICE):  # (wrapped by instantiate: a loader's cache)
                run = build(cfg, work_dir)
            if rank == 0:
                save_run_config(composed, run_dir / ".hydra")
            value = execute(run, work_dir)
            wait_for_every_rank()  # the processes leave together
        return value


def _only_warnings_to_stderr(rank: int) -> None:
    """The processes other than rank 0 of a distributed run print and log nothing but warnings, on stderr: rank
    0 writes train.log and shows the progress for all of them."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter(f"rank {rank}: %(message)s"))
    root.addHandler(to_stderr)
    root.setLevel(logging.WARNING)
