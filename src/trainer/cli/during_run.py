"""What `train` does in its run directory while the run is under way: rank 0 holds the directory's lock, a mistake
found once the run has started leaves the directory as it was found, and the run's config is saved whole. A sweep
started again finds its finished jobs done."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trainer.cli.before_run import ValidateBeforeRun
from trainer.cli.mistakes import describe_mistake
from trainer.cli.usage import UsageError
from trainer.config import ConfigError
from trainer.observe.run_records import UnreadableFile, read_summary
from trainer.vocabulary import StopReason

if typing.TYPE_CHECKING:
    from trainer.run_directory import RunDirectoryLock

log = logging.getLogger(__name__)


@contextlib.contextmanager
def sole_owner_of(run_dir: Path, composed: DictConfig, rank: int) -> Iterator[Optional[RunDirectoryLock]]:
    """Rank 0 locks the run directory before anything there is read, and holds the lock until the run ends: a
    second run, sweep job or resume into it is refused in one line, and changes nothing there. Under the lock it
    checks that the directory holds no other run's records: a sweep's job directories are checked only here, and
    a run directory again (another run may have written there since ValidateBeforeRun looked)."""
    from trainer.run_directory import lock, refuse_another_runs_records

    if rank != 0:
        yield None
        return
    key = "hydra.sweep.dir" if HydraConfig.get().mode == RunMode.MULTIRUN else "hydra.run.dir"
    try:
        held = lock(run_dir, key)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    try:
        refuse_another_runs_records(run_dir, composed, key, f"{HydraConfig.get().job.name}.log")
    except ConfigError as error:
        held.release()
        raise UsageError(str(error)) from None
    try:
        yield held
    finally:
        held.release()


@contextlib.contextmanager
def run_dir_left_as_found_on_a_mistake(run_dir: Path, clean_up: bool = True,
                                       lock: Optional[RunDirectoryLock] = None) -> Iterator[None]:
    """Mistakes found only once the run has started (the data contradicts data.task, a component rejects its
    arguments, a checkpoint to resume from does not fit) become a UsageError in one line too, and leave the run
    directory as they found it: the folders Hydra made for this run are removed again; in an existing one, what
    the attempt wrote is removed and its lines are cut from the log (by rank 0 alone, in a distributed run).
    The run directory's `lock`, taken before, is let go of (its file removed) before the folders are."""
    before = {path.name for path in run_dir.iterdir()}
    log_file = run_dir / f"{HydraConfig.get().job.name}.log"
    log_stat = log_file.stat() if log_file.exists() else None
    try:
        yield
    except (ConfigError, InstantiationException) as error:
        for path in run_dir.iterdir() if clean_up else ():
            if path.name in before:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if log_stat is not None and log_file.stat().st_size != log_stat.st_size:
            os.truncate(log_file, log_stat.st_size)
            os.utime(log_file, ns=(log_stat.st_atime_ns, log_stat.st_mtime_ns))
        if clean_up:
            if lock is not None:
                lock.release()
            _remove_folders_made_for(run_dir)
        raise UsageError(describe_mistake(error)) from None


@contextlib.contextmanager
def work_folder(run_dir: Path, fast_dev_run: bool | int, rank: int) -> Iterator[Path]:
    """Where the run writes its checkpoints and records: the run directory, or for trainer.fast_dev_run the folder
    fast_dev_run/ in it, which rank 0 removes when the run ends, however it ends: a dev run writes and reads back
    what a run would, then keeps none of it (train.log and .hydra/ stay, in the run directory)."""
    if not fast_dev_run:
        yield run_dir
        return
    scratch = run_dir / "fast_dev_run"
    scratch.mkdir(exist_ok=True)
    try:
        yield scratch
    finally:
        if rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)
    log.info("trainer.fast_dev_run: the config ran end to end on %d batch(es) of train, val and test, and nothing "
             "the run wrote was kept; leave trainer.fast_dev_run out to train", int(fast_dev_run))


def _remove_folders_made_for(run_dir: Path) -> None:
    """Remove the run directory and the folders above it that this command made, deepest first, while empty."""
    kept = ValidateBeforeRun.existing_folder
    made = [run_dir] if kept is None else [folder for folder in (run_dir, *run_dir.parents) if kept in folder.parents]
    for folder in made:
        if any(folder.iterdir()):
            break
        folder.rmdir()


def save_run_config(composed: DictConfig, folder: Path) -> None:
    """The config, Hydra's settings and the overrides, as Hydra would have written them before the run
    (hydra.output_subdir is null in train.yaml so that a run refused at its start writes nothing). Each file is
    written whole or not at all (a temp file renamed into place), and a .hydra/ this call made is removed again
    when a write fails: a config.yaml cut short by a full disk would make trainer.resume=auto take the run
    directory for another run's, and refuse to carry it on."""
    made = not folder.exists()
    folder.mkdir(exist_ok=True)
    try:
        for name, config in (("config.yaml", composed), ("hydra.yaml", HydraConfig.instance().cfg),
                             ("overrides.yaml", HydraConfig.get().overrides.task)):
            _save_whole(config, folder / name)
    except OSError:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _save_whole(config: Any, path: Path) -> None:
    """OmegaConf.save through a temp file renamed over `path`; a failed write removes the temp file and names
    `path` (the OS error of a write or close names no file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        OmegaConf.save(config, tmp)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None


def finished_before(composed: DictConfig, run_dir: Path) -> Optional[float]:
    """With trainer.resume=auto, a run that already ended in `run_dir` with this very config (a sweep started
    again: its finished jobs) has nothing left to do: its summary's value for sweepers; None otherwise. A run
    that was interrupted, or whose config changed (more epochs, say), goes on to resume. So does one whose
    summary.json or .hydra/config.yaml is not what train writes (damaged, or written by someone else)."""
    from trainer.observe.summary import value_for_sweepers
    from trainer.run_directory import saved_config

    if composed.trainer.resume != "auto":
        return None
    summary = _finished_run_summary(run_dir / "summary.json")
    if summary is None or saved_config(run_dir) != OmegaConf.to_container(composed):
        return None
    log.info("%s finished before with this config (stopped by %s after %d epochs, best %s %s): nothing to do. "
             "Remove its summary.json to train it again", run_dir, summary["stop_reason"], summary["epochs"],
             summary["monitor"], summary["best_value"])
    return value_for_sweepers(summary["best_value"], summary.get("mode", "min"))


def _finished_run_summary(path: Path) -> Optional[dict]:
    """summary.json of a run that ended (not one interrupted), as train-report reads it (the keys and types
    summary_of writes); None for any other file."""
    try:
        summary = read_summary(path)
    except UnreadableFile:
        return None
    if summary is None or summary.get("mode", "min") not in ("min", "max"):
        return None
    return None if summary["stop_reason"] == StopReason.INTERRUPTED.value else summary
