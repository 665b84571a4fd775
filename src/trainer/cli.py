"""The `train` command: Hydra composes the config, `validate` checks it, `trainer.run` trains.

A user's mistake (an unknown option, a wrong type, a value out of range, a device this machine lacks) ends the
command with exit code 2 and one line naming the key, the value and what is allowed: no traceback, and nothing
written, because the check runs before Hydra creates the run directory. Mistakes that show only once the run
starts (the data, a checkpoint to resume from) end the same way and leave the run directory as they found it.
torch is imported only once a run starts, so `train --help` and config errors come back quickly.

A run stopped by a signal (SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C) saves last.pt first and exits with 128 + the
signal's number.

`evaluate` and `predict` read a checkpoint train wrote (configs/evaluate.yaml, predict.yaml; the work is in
trainer.evaluation and trainer.prediction). Their mistakes (a checkpoint that is missing or unreadable, an input
the model cannot take) end the same way, in one line and exit code 2; they write nothing of Hydra's. So does
`train-export` (configs/export.yaml, trainer.export), which writes a checkpoint's model as a .safetensors file and a
JSON file that `evaluate` and `predict` take in its place.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import sys
import traceback
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from trainer.config import ConfigError, config_dir, validate
from trainer.usage import exit_with_usage_error

if typing.TYPE_CHECKING:
    from trainer.run_directory import RunDirectoryLock

FILE_SYSTEM_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EFBIG)
"""The OS errors of a file system that refuses a write: the command ends in one line, not a traceback."""
RESUME_ADVICE = ("; the checkpoints written before it are whole: once it can write, trainer.resume=auto carries the "
                 "run on")
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ValidateBeforeRun(Callback):
    """Hydra calls this after composing the config and before it creates the run directory. Hydra turns a
    callback's exceptions into warnings and carries on, so a bad config exits here, before anything is written."""

    existing_folder: Optional[Path] = None
    """The deepest folder of the run directory's path that existed before this command (a single run; a sweep
    leaves it None): a run refused once started removes the folders Hydra made below it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            settings = validate(config)
            from trainer.device import resolve_device  # imports torch: only once the config is known good

            resolve_device(settings.device)
        except ConfigError as error:
            exit_with_usage_error("train", str(error))
        _same_directory_on_every_rank(config, "run")
        folder = _checked_directory(config, "run")
        ValidateBeforeRun.existing_folder = next(path for path in (folder, *folder.parents) if path.exists())
        from trainer.distributed import from_environment
        from trainer.run_directory import refuse_a_directory_in_use, refuse_another_runs_records

        if from_environment().rank == 0:  # (the others write nothing there)
            try:
                refuse_a_directory_in_use(folder, "hydra.run.dir")
                refuse_another_runs_records(folder, config, "hydra.run.dir", f"{config.hydra.job.name}.log")
            except ConfigError as error:
                exit_with_usage_error("train", str(error))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _same_directory_on_every_rank(config, "sweep")
        _checked_directory(config, "sweep")


def _checked_directory(config: DictConfig, mode: str) -> Path:
    """hydra.run.dir (or hydra.sweep.dir), absolute, resolved as Hydra will resolve it (${now:...} is cached in the
    config, so it names the same moment). One that cannot be resolved, that holds a `${` (Hydra resolves the run
    directory again where it names the log file), or that is too long for this system ends the command here in one
    line: Hydra would fail on it with a traceback."""
    from trainer.run_directory import refuse_a_path_too_long

    key = f"hydra.{mode}.dir"
    try:
        folder = Path(os.path.abspath(config.hydra[mode].dir))
    except OmegaConfBaseException as error:
        typed = OmegaConf.to_container(config.hydra[mode], resolve=False)["dir"]
        exit_with_usage_error("train", str(ConfigError(key, typed, f"a path whose ${{...}} interpolations "
                                                                   f"resolve ({str(error).splitlines()[0]})")))
    if "${" in str(folder):
        exit_with_usage_error("train", str(ConfigError(key, str(folder), "a path without ${ in it (Hydra would read "
                                                                         "it as an interpolation again when it names "
                                                                         "the log file)")))
    try:
        refuse_a_path_too_long(folder, key)
    except ConfigError as error:
        exit_with_usage_error("train", str(error))
    return folder


def _same_directory_on_every_rank(config: DictConfig, mode: str) -> None:
    """Under torchrun every process composes the config and resolves ${now:...} itself, a moment apart: rank 0's
    hydra.run.dir (or hydra.sweep.dir) is made every process's, so that a run has one directory, not one per
    process."""
    from trainer import distributed  # imports torch: only for a distributed run

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


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_app(cfg: DictConfig) -> float:
    from trainer.distributed import from_environment, wait_for_every_rank
    from trainer.interrupts import Interrupted
    from trainer.run import build, execute, finished_before

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    composed = copy.deepcopy(cfg)  # as composed: building fills in what data.task=auto found
    rank = from_environment().rank
    if rank != 0:
        _only_warnings_to_stderr(rank)
    with _refused_writes_in_one_line("train", RESUME_ADVICE), _sole_owner_of(run_dir, composed, rank) as lock:
        finished = finished_before(composed, run_dir)  # a sweep started again: this job is done
        if finished is not None:
            return finished
        with _run_dir_left_as_found_on_a_mistake(run_dir, clean_up=rank == 0, lock=lock):
            run = build(cfg, run_dir)
        if rank == 0:
            _save_run_config(composed, run_dir / ".hydra")
        try:
            value = execute(run, run_dir)
        except Interrupted as stop:  # last.pt and the summary are written; the exit code says which signal
            sys.exit(stop.exit_code)
        wait_for_every_rank()  # the processes leave together
        return value


@contextlib.contextmanager
def _sole_owner_of(run_dir: Path, composed: DictConfig, rank: int) -> Iterator[Optional[RunDirectoryLock]]:
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
        exit_with_usage_error("train", str(error))
    try:
        refuse_another_runs_records(run_dir, composed, key, f"{HydraConfig.get().job.name}.log")
    except ConfigError as error:
        held.release()
        exit_with_usage_error("train", str(error))
    try:
        yield held
    finally:
        held.release()


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


@contextlib.contextmanager
def _run_dir_left_as_found_on_a_mistake(run_dir: Path, clean_up: bool = True,
                                        lock: Optional[RunDirectoryLock] = None) -> Iterator[None]:
    """Mistakes found only once the run has started (the data contradicts data.task, a component rejects its
    arguments, a checkpoint to resume from does not fit) end in one line too, and leave the run directory as
    they found it: the folders Hydra made for this run are removed again; in an existing one, what the attempt
    wrote is removed and its lines are cut from the log (by rank 0 alone, in a distributed run). Exiting here,
    inside the job, keeps Hydra from adding its own report. The run directory's `lock`, taken before, is let go
    of (its file removed) before the folders are."""
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
        exit_with_usage_error("train", describe_mistake(error))


def _remove_folders_made_for(run_dir: Path) -> None:
    """Remove the run directory and the folders above it that this command made, deepest first, while empty."""
    kept = ValidateBeforeRun.existing_folder
    made = [run_dir] if kept is None else [folder for folder in (run_dir, *run_dir.parents) if kept in folder.parents]
    for folder in made:
        if any(folder.iterdir()):
            break
        folder.rmdir()


def _save_run_config(composed: DictConfig, folder: Path) -> None:
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
    distributed = sys.modules.get("trainer.distributed")  # (imported where a run has several processes)
    return distributed is not None and distributed.joined()


def _end_a_distributed_process(code: Optional[int | str]) -> None:
    """A process of a torchrun or srun run ends here with `code` (sys.exit's), without Python's interpreter
    teardown (its exit handlers run, its streams are flushed): see distributed.end_process. Returns for a lone
    process, or one whose process group is another program's."""
    if not _in_a_distributed_run():
        return
    if isinstance(code, str):  # sys.exit(MESSAGE): printed, and exit code 1
        print(code, file=sys.stderr)
    sys.modules["trainer.distributed"].end_process(code if isinstance(code, int) else 0 if code is None else 1)


def _train_command() -> None:
    # Hydra prints its own multi-line report of a config error unless asked to raise it (whatever the user's
    # environment says: HYDRA_FULL_ERROR=0 too); we make it one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    logging.raiseExceptions = False  # a full disk: train.log's lines are lost, not each one a traceback on stderr
    try:
        with _refused_writes_in_one_line("train"):  # (Hydra's own: the run directory on a read-only disk)
            _train_app()
    except (HydraException, OmegaConfBaseException) as error:
        exit_with_usage_error("train", describe_config_error(error))
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one during it
        print("train: stopped at once by Ctrl-C; checkpoints/last.pt, if written, holds the last state saved",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except Exception as error:
        slurm_queue = sys.modules.get("trainer.slurm_queue")  # (imported by hydra/launcher=slurm only)
        if slurm_queue is not None and isinstance(error, slurm_queue.SweepJobsNotRun):
            print(f"train: {'' if error.exit_code == 128 + signal.SIGINT else 'error: '}{error}", file=sys.stderr)
            sys.exit(error.exit_code)
        uncompleted = describe_uncompleted_job(error)
        if uncompleted is None:
            raise
        print(f"train: error: {uncompleted}", file=sys.stderr)
        sys.exit(1)


SUBMITIT_TRACE_RULE = "-" * 22
"""What frames the job's traceback in submitit's FailedJobError."""


def describe_uncompleted_job(error: Exception) -> Optional[str]:
    """One line for submitit's UncompletedJobError, with which `train -m hydra/launcher=slurm` (waiting for every
    job's result) learns that a job ended without one: killed at its time limit once it had been requeued
    hydra.launcher.max_num_timeout times, cancelled, or failed. Its message holds the job's whole error stream or
    traceback: the line names the job, what happened and its log. None for any other error (only the launcher
    imports submitit: without it, there is no such error)."""
    utils = sys.modules.get("submitit.core.utils")
    if utils is None or not isinstance(error, utils.UncompletedJobError):
        return None
    text = str(error)
    # "Job 4242_0 (task: 0) with path DIR/4242_0_0_result.pkl\nhas not produced any output (state: TIMEOUT)"
    no_result = re.search(r"^Job (\S+) \(task: \d+\) with path (\S+)_result\.pkl\n"
                          r"has not produced any output \(state: ([^)]*)\)", text, re.MULTILINE)
    # FailedJobError: "Job (task=0) failed during processing with trace:", the trace between rules, the logs' paths
    failed_log = re.search(r"^  - (\S*?([^/\s]+)_\d+_log\.err)$", text, re.MULTILINE)
    if no_result is not None:
        job, log = no_result.group(1), f"{no_result.group(2)}_log.err"
        what = f"ended without a result (Slurm state {no_result.group(3)})"
    elif failed_log is not None and text.count(SUBMITIT_TRACE_RULE) >= 2:
        job, log = failed_log.group(2), failed_log.group(1)
        trace = text.split(SUBMITIT_TRACE_RULE)[1].strip().splitlines()
        # "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times."
        what = "failed: " + re.sub(r"^(\w+\.)+(?=\w+: )", "", trace[-1] if trace else "(no traceback)")
    else:
        return f"a Slurm job did not complete: {text.splitlines()[0] if text else type(error).__name__}"
    if "timed-out too many times" in what or "TIMEOUT" in what:
        what += ("; it reached its time limit and was not requeued (hydra.launcher.max_num_timeout caps the "
                 "requeues, hydra.launcher.timeout_min sets the limit): the sweep run again in the same "
                 "hydra.sweep.dir carries it on from the last.pt it saved")
    return f"Slurm job {job} {what} (its log: {log})"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _evaluate_app(cfg: DictConfig) -> None:
    from trainer import evaluation

    with _mistakes_in_one_line("evaluate"):
        evaluation.main(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def _predict_app(cfg: DictConfig) -> None:
    from trainer import prediction

    with _mistakes_in_one_line("predict"):
        prediction.main(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def _export_app(cfg: DictConfig) -> None:
    from trainer import export

    with _mistakes_in_one_line("train-export"):
        export.main(cfg)


def evaluate() -> None:
    """Console entry point of `evaluate`: a checkpoint's test metrics, and a classifier's confusion matrix."""
    _run_checkpoint_command(_evaluate_app, "evaluate")


def predict() -> None:
    """Console entry point of `predict`: a checkpoint's predictions for images or rows of a table."""
    _run_checkpoint_command(_predict_app, "predict")


def export() -> None:
    """Console entry point of `train-export` (a shell's builtin `export` would shadow a script of that name): a
    checkpoint's model as NAME.safetensors and NAME.json, to share without code."""
    _run_checkpoint_command(_export_app, "train-export")


def _run_checkpoint_command(app: Callable[[], None], command: str) -> None:
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us as exceptions, for one line
    try:
        with _refused_writes_in_one_line(command):
            app()
    except (HydraException, OmegaConfBaseException) as error:
        exit_with_usage_error(command, describe_config_error(error, command))
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)


@contextlib.contextmanager
def _mistakes_in_one_line(command: str) -> Iterator[None]:
    """A mistake found inside a command's job ends it in one line; exiting here, inside the job, keeps Hydra from
    adding its own report."""
    with _refused_writes_in_one_line(command):
        try:
            yield
        except (ConfigError, InstantiationException) as error:
            exit_with_usage_error(command, describe_mistake(error, command))


def describe_mistake(error: ConfigError | InstantiationException, command: str = "train") -> str:
    """One line for a mistake found once a command runs. A loader or model that found the mistake itself (a
    missing column, tabular data for a CNN) raised a ConfigError, which Hydra's instantiate wraps: its message."""
    cause = error if isinstance(error, ConfigError) else error.__cause__
    return str(cause) if isinstance(cause, ConfigError) else describe_config_error(error, command)


PLUGIN_EXTRAS = {"hydra/launcher/submitit_slurm": ("hydra/launcher=slurm", "slurm"),
                 "hydra/sweeper/optuna": ("hparams_search=optuna", "optuna")}
"""The Hydra plugins' configs that the optional extras install: what asks for each, and the extra."""


def describe_config_error(error: Exception, command: str = "train") -> str:
    """One line for Hydra's and OmegaConf's composition errors: the key, the value and what is allowed."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file in PLUGIN_EXTRAS:
        option, extra = PLUGIN_EXTRAS[error.missing_cfg_file]
        return f"{option} needs the `{extra}` extra, which is not installed: pip install \"trainer[{extra}]\""
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, "one of " + ", ".join(sorted(error.options))))
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"{cause.full_key}: no such setting (`{command} --cfg job` lists the settings)"
    if isinstance(cause, ValidationError) and cause.full_key and dataclasses.is_dataclass(cause.object_type):
        declared = typing.get_type_hints(cause.object_type)[cause.key]
        return str(ConfigError(cause.full_key, cause.value, _describe_type(declared)))
    unparsed = _unparsed_override(error)
    if unparsed is not None:
        return unparsed
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        # "Error in call to target 'trainer.models.MLP':" + "MLP.__init__() got an unexpected keyword argument"
        return f"{str(error).splitlines()[0]} {type(error.__cause__).__name__}: {error.__cause__}"
    return " ".join(str(error).split("\n")[0].split())


def _unparsed_override(error: Exception) -> Optional[str]:
    """One line for an override Hydra's grammar cannot read (a quote, `=`, a letter outside ASCII) or reads as a
    list (a comma), saying how to quote it: `hydra.run.dir=/tmp/it's` -> hydra.run.dir='/tmp/it\\'s'. None for
    other errors."""
    if isinstance(error, OverrideParseException):
        override = error.override
    else:
        ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", str(error).split("\n")[0])
        if ambiguous is None:
            return None
        override = ambiguous.group(1)
    key, equals, value = override.partition("=")
    if not equals or not re.fullmatch(r"[+~]{0,2}[\w.@/-]+", key):  # the key itself is the mistake
        return None
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # quoted, but not as the grammar wants
        value = value[1:-1]
    return str(ConfigError(key.lstrip("+~"), value, f"a value Hydra's override grammar can read: to pass it as one "
                                                    f"string, quote it whole, as {key}={quoted_for_hydra(value)} "
                                                    f"(inside your shell's own quotes)"))


def quoted_for_hydra(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar, which reads back as `value`: single quotes, with a
    quote escaped, and the backslashes before a quote or the closing quote doubled."""
    return "'" + re.sub(r"(\\*)('|$)", lambda found: found.group(1) * 2 + ("\\'" if found.group(2) else ""),
                        value) + "'"


def _describe_type(declared: Any) -> str:
    """int -> 'an integer', Optional[float] -> 'a number, or null'."""
    options = [t for t in typing.get_args(declared) if t is not type(None)] or [declared]
    described = TYPE_NAMES.get(options[0], getattr(options[0], "__name__", str(options[0])))
    return described + (", or null" if type(None) in typing.get_args(declared) else "")


@contextlib.contextmanager
def _refused_writes_in_one_line(command: str, advice: str = "") -> Iterator[None]:
    """A disk that is full, read-only or failing is no mistake of the command line: one line naming the file and
    the OS error, and exit code 1. Inside a job, this also keeps Hydra from adding its own report."""
    try:
        yield
    except OSError as error:
        if error.errno not in FILE_SYSTEM_REFUSALS:
            raise
        name = errno.errorcode.get(error.errno, str(error.errno))
        where = f" {error.filename}" if error.filename else ""
        print(f"{command}: error: could not write{where}: {error.strerror} ({name}){advice}", file=sys.stderr)
        sys.exit(1)
