"""A run directory has one owner: the run that holds its lock, and whose records it holds.

Two processes writing one run directory interleave their metrics.csv rows and race each other's rotation of
last.pt; a new run in a folder that holds anything overwrites what is there (metrics.csv, summary.json, .hydra/,
health.csv) or mixes its files with the user's. So rank 0 of a run locks its directory before it reads or writes
anything there and holds the lock until the run ends, and a folder that holds anything is used only by the run
whose records they are, carried on with trainer.resume.

What a run directory holds may have been written by anyone: a file that cannot be read, or is not what train
writes there, is not a run's.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from trainer.config import ConfigError
from trainer.observe import UnreadableFile, read_record_text
from trainer.training.resume import setup_difference

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there are not locked
    fcntl = None

LOCK_NAME = ".train.lock"
"""The lock file in the run directory, holding its holder's pid as text. The holder removes it when the run ends;
one left by a killed process is taken over."""
TRAINER_KEYS_OF_THE_RUN = {("checkpoint", "dir"): None, ("inspect",): None, ("find_lr",): False}
"""Besides the setup that the checkpoints depend on, what makes a run directory's records this run's: where its
checkpoints are (a run that looks elsewhere finds none and starts over those records), and whether it trains (not
when it inspects a step or sweeps the learning rate). Each with what a config saved before the key existed meant."""
NAMES_SHOWN = 4
MOMENT_SECONDS = 0.5
"""How long a run that finds the lock taken looks again before it takes the holder for a run: a process that only
looks at the lock (refuse_a_directory_in_use) holds it for an instant, and a new holder writes its pid just after it
has locked."""


class RunDirectoryLock:
    """An exclusive flock on the run directory's LOCK_NAME file, held until `release`.

    The holder removes the file when it lets go, so that a finished run leaves none behind. That is safe because a
    taker, once it holds the lock, checks that the file it locked is still the one at the path, not one its holder
    removed in the meantime, and tries again if not."""

    def __init__(self, path: Path, descriptor: Optional[int]):
        self.path, self.descriptor = path, descriptor
        if descriptor is not None:
            _HELD.add(self)

    def release(self) -> None:
        """Remove the lock file and let go of it; a second call does nothing."""
        if self.descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.descriptor, fcntl.LOCK_UN)
        os.close(self.descriptor)
        self.descriptor = None
        _HELD.discard(self)


_HELD: set[RunDirectoryLock] = set()
"""The locks this process holds."""


def _forget_held_locks_in_a_forked_child() -> None:
    """A forked process (a DataLoader worker) shares the lock with its parent, and would hold it on after the parent
    is killed, until it notices and exits: a resume started at once would be refused naming the dead parent. The
    child closes its copy of the descriptor, so that the lock is the parent's alone; closing (unlike LOCK_UN) leaves
    the parent's lock as it is."""
    for held in _HELD:
        os.close(held.descriptor)
        held.descriptor = None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_locks_in_a_forked_child)


def lock(run_dir: Path, key: str) -> RunDirectoryLock:
    """Take the run directory's lock, or refuse the run in one line naming the process that holds it. A lock left by
    a process that died is free again (the system lets go of a dead process's flock): its file is taken over."""
    path = run_dir / LOCK_NAME
    if fcntl is None:
        return RunDirectoryLock(path, None)
    while True:
        descriptor = _open_lock_file(path, os.O_RDWR | os.O_CREAT, key)
        if not _flocked(descriptor, fcntl.LOCK_EX, patience=MOMENT_SECONDS):
            holder = _holder(descriptor)
            os.close(descriptor)
            raise _in_use(run_dir, key, holder)
        if _still_at(descriptor, path):
            break
        os.close(descriptor)  # its holder let go and removed it after we opened it: lock the one there now
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return RunDirectoryLock(path, descriptor)


def refuse_a_directory_in_use(run_dir: Path, key: str) -> None:
    """Refuse the run in one line if another process holds the run directory's lock: before the run is known good,
    without creating a lock file, so that a run started while another writes there is told so, whatever that one
    has written yet."""
    path = run_dir / LOCK_NAME
    if fcntl is None or not os.path.lexists(path):
        return
    descriptor = _open_lock_file(path, os.O_RDONLY, key)
    try:
        if not _flocked(descriptor, fcntl.LOCK_SH):  # (let go of again as it is closed)
            raise _in_use(run_dir, key, _holder(descriptor))
    finally:
        os.close(descriptor)


def _open_lock_file(path: Path, flags: int, key: str) -> int:
    """The lock file, opened as a regular file of its own: never through a symlink or as a hard link to another
    file (the holder truncates it to write its pid), and never blocking on a FIFO."""
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as error:
        raise ConfigError(key, str(path.parent), f"a folder whose {LOCK_NAME} this process can open and write "
                                                 f"({error.strerror})") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
        os.close(descriptor)
        raise ConfigError(key, str(path.parent), f"a folder whose {LOCK_NAME} is a lock file train made (this one is "
                                                 f"not a regular file, or is linked to another name)")
    return descriptor


def _flocked(descriptor: int, operation: int, patience: float = 0.0) -> bool:
    """Whether the lock was taken, trying again for `patience` seconds; False when another process holds it."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _in_use(run_dir: Path, key: str, holder: str) -> ConfigError:
    return ConfigError(key, str(run_dir), f"a run directory no other process is using ({holder} holds it: wait for "
                                          f"it to end, or use a new {key})")


def _holder(descriptor: int) -> str:
    """'train pid 1234', from the lock file; its holder writes the pid just after taking the lock."""
    deadline = time.monotonic() + MOMENT_SECONDS
    pid = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    while not pid.isdigit() and time.monotonic() < deadline:
        time.sleep(0.01)
        pid = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return f"train pid {pid}" if pid.isdigit() else "another train process"


def _still_at(descriptor: int, path: Path) -> bool:
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    locked = os.fstat(descriptor)
    return (at_path.st_dev, at_path.st_ino) == (locked.st_dev, locked.st_ino)


def refuse_a_path_too_long(folder: Path, key: str) -> None:
    """A folder name or a path longer than this system allows, refused in one line naming the limit, before
    anything tries to create it (the error would otherwise be a traceback)."""
    if not hasattr(os, "pathconf"):  # Windows: no pathconf, and its own limits
        return
    existing = next(path for path in (folder, *folder.parents) if os.path.isdir(path))
    name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    longest = max(folder.parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        raise ConfigError(key, str(folder), f"a path whose folder names are at most {name_max} bytes long (this "
                                            f"system's limit; one here is {len(os.fsencode(longest))})")
    if len(os.fsencode(folder)) >= path_max:
        raise ConfigError(key, str(folder), f"a path shorter than {path_max} bytes (this system's limit; this one "
                                            f"is {len(os.fsencode(folder))})")


def refuse_another_runs_records(run_dir: Path, config: DictConfig, key: str, log_name: str) -> None:
    """Refuse, in one line, a run directory that holds anything but this run's own records. A new run needs an
    empty folder (or none); trainer.resume needs the folder of the run it carries on: one holding the checkpoint
    it resumes from, or whose .hydra/config.yaml is of a run with this setup. A folder holding nothing but the
    log (`log_name`) is of a run stopped while it was being built: trainer.resume starts it again. Nor may its
    trainer.checkpoint.dir lead into another run's directory."""
    _refuse_checkpoints_in_another_run(run_dir, config.trainer.checkpoint.dir)
    held = _names_in(run_dir, key)
    if not held:
        return
    settings = config.trainer
    if settings.resume is None:
        holds_a_run = ".hydra" in held or log_name in held  # (every run leaves its log, and .hydra/ once built)
        why_not = None if held == [log_name] else _not_this_runs(
            run_dir, OmegaConf.merge(config, {"trainer": {"resume": "auto"}}), held)
        carry_on = f"use a new {key}" if not holds_a_run else (
            f"trainer.resume=auto carries on the run there, or use a new {key}" if why_not is None else
            f"use a new {key} (trainer.resume=auto would not carry it on: {why_not})")  # (an inspect or find_lr run)
        raise ConfigError(key, str(run_dir), f"an empty folder for a new run (it holds {_listed(held)}): {carry_on}")
    reason = None if held == [log_name] else _not_this_runs(run_dir, config, held)
    if reason is not None:
        raise ConfigError(key, str(run_dir), f"an empty folder, or the run directory of the run that trainer.resume="
                                             f"{settings.resume} carries on ({reason}): use a new {key}")


def _refuse_checkpoints_in_another_run(run_dir: Path, checkpoint_dir: str) -> None:
    """A trainer.checkpoint.dir that leads into another run's directory (a folder holding .hydra/ or a lock file,
    between it and the folders this run's directory is in) is refused: the lock is the run directory's, and this run
    would rotate that run's last.pt, from under it if it is running."""
    own = run_dir.resolve()
    folder = (run_dir / checkpoint_dir).resolve()
    for candidate in (folder, *folder.parents):
        if candidate == own or candidate in own.parents:
            return
        if (candidate / ".hydra").is_dir() or os.path.lexists(candidate / LOCK_NAME):
            raise ConfigError("trainer.checkpoint.dir", checkpoint_dir, f"a folder of this run's own, not one in "
                                                                        f"{candidate}, another run's directory")


def _names_in(run_dir: Path, key: str) -> list[str]:
    """What the folder holds, its lock file left out; nothing when there is no folder yet."""
    try:
        return sorted(entry.name for entry in os.scandir(run_dir) if entry.name != LOCK_NAME)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise ConfigError(key, str(run_dir), f"a folder this process can read ({error.strerror})") from None


def _listed(names: list[str]) -> str:
    """'.hydra, checkpoints, metrics.csv and 3 more'."""
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown if len(names) <= NAMES_SHOWN else f"{shown} and {len(names) - NAMES_SHOWN} more"


def _not_this_runs(run_dir: Path, config: DictConfig, held: list[str]) -> Optional[str]:
    """Why the folder is not that of the run trainer.resume carries on; None when it is."""
    settings = config.trainer
    checkpoint_dir = run_dir / settings.checkpoint.dir
    if settings.resume == "auto":
        if any((checkpoint_dir / name).exists() for name in ("last.pt", "last.previous.pt")):
            return None
    elif run_dir.resolve() in Path(settings.resume).resolve().parents:
        return None
    saved = saved_config(run_dir)
    if saved is None:
        return f"it holds {_listed(held)}, but no checkpoint to resume from and no readable .hydra/config.yaml"
    current = OmegaConf.to_container(config, resolve=False)
    difference = setup_difference(saved, current) or _trainer_difference(saved, current)
    if difference is not None:
        return f"its .hydra/config.yaml is another run's: {difference}"
    return None


def _trainer_difference(saved: dict[str, Any], current: dict[str, Any]) -> Optional[str]:
    for path, before_the_key in TRAINER_KEYS_OF_THE_RUN.items():
        old, new = _setting(saved, "trainer", *path), _setting(current, "trainer", *path)
        old = before_the_key if old is None else old
        if old != new:
            return f"trainer.{'.'.join(path)} is {old!r} there, {new!r} here"
    return None


def _setting(config: Any, *path: str) -> Any:
    """The value at `path` of a nested dict; None where a part is missing or not a dict."""
    for name in path:
        config = config.get(name) if isinstance(config, dict) else None
    return config


def saved_config(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's config as `cli.during_run.save_run_config` wrote it to .hydra/config.yaml, interpolations
    unresolved; None when the file is missing or is not a YAML mapping (a `!!python` tag is refused by the safe
    loader, never run)."""
    try:
        text = read_record_text(run_dir / ".hydra" / "config.yaml")
        if text is None:
            return None
        saved = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except (UnreadableFile, YAMLError, OmegaConfBaseException, ValueError, RecursionError):
        return None
    return saved if isinstance(saved, dict) else None
