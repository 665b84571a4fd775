"""A run directory has one owner: the run that holds its lock.

Two processes writing one run directory interleave their metrics.csv rows and race each other's rotation of
last.pt. So rank 0 of a run locks its directory before it reads or writes anything there, and holds the lock
until the run ends.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from trainer.config import ConfigError

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there are not locked
    fcntl = None

LOCK_NAME = ".train.lock"
"""The lock file in the run directory, holding its holder's pid as text. The holder removes it when the run ends;
one left by a killed process is taken over."""


class RunDirectoryLock:
    """An exclusive flock on the run directory's LOCK_NAME file, held until `release`.

    The holder removes the file when it lets go, so that a finished run leaves none behind. That is safe because a
    taker, once it holds the lock, checks that the file it locked is still the one at the path, not one its holder
    removed in the meantime, and tries again if not."""

    def __init__(self, path: Path, descriptor: Optional[int]):
        self.path, self.descriptor = path, descriptor

    def release(self) -> None:
        """Remove the lock file and let go of it; a second call does nothing."""
        if self.descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.descriptor, fcntl.LOCK_UN)  # also for DataLoader workers forked with the descriptor
        os.close(self.descriptor)
        self.descriptor = None


def lock(run_dir: Path, key: str) -> RunDirectoryLock:
    """Take the run directory's lock, or refuse the run in one line naming the process that holds it. A lock left by
    a process that died is free again (the system lets go of a dead process's flock): its file is taken over."""
    path = run_dir / LOCK_NAME
    if fcntl is None:
        return RunDirectoryLock(path, None)
    while True:
        descriptor = _open_lock_file(path, os.O_RDWR | os.O_CREAT, key)
        if not _flocked(descriptor, fcntl.LOCK_EX):
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


def _flocked(descriptor: int, operation: int) -> bool:
    """Whether the lock was taken; False when another process holds it."""
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _in_use(run_dir: Path, key: str, holder: str) -> ConfigError:
    return ConfigError(key, str(run_dir), f"a run directory no other process is using ({holder} holds it: wait for "
                                          f"it to end, or use a new {key})")


def _holder(descriptor: int) -> str:
    """'train pid 1234', from the lock file; its holder writes the pid just after taking the lock."""
    pid = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return f"train pid {pid}" if pid.isdigit() else "another train process"


def _still_at(descriptor: int, path: Path) -> bool:
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    locked = os.fstat(descriptor)
    return (at_path.st_dev, at_path.st_ino) == (locked.st_dev, locked.st_ino)
