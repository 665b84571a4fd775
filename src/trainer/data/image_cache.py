"""An image folder's decoded pixels, kept between runs: a folder holding images.npy (uint8 (N, C, H, W), read
memory-mapped) and manifest.json (image_manifest), reused while the image files stay as they were.

A cache is built in a temporary folder beside its place and renamed into it once whole (its files flushed and
synced), so a run killed while decoding leaves no folder that a later run could take for a cache. Runs that want
the same cache at once take turns (a lock file beside it): the first decodes, the others wait and reuse what it
wrote. A later run checks what it finds all the same (the manifest as a stranger's file; images.npy's header,
dtype, shape and length against it) and decodes again whatever fails a check, saying why in one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np

from trainer.config import ConfigError
from trainer.data.image_decoding import decode_folder, naming, unreadable_image_error
from trainer.data.image_listing import Listing
from trainer.data.image_manifest import CacheSettings, DamagedCache, Manifest

log = logging.getLogger(__name__)

ARRAY, MANIFEST = "images.npy", "manifest.json"
SHOWN_SKIPPED = 3
"""Files named in the warning about images left out (data.skip_damaged=true); the rest are counted."""


@dataclass
class CachedImages:
    images: np.memmap
    """uint8 (N, C, H, W), read-only, one row per file of the manifest."""
    manifest: Manifest


def cached_images(folder: Path, listing: Listing, settings: CacheSettings, skip_damaged: bool,
                  cache_dir: Optional[str]) -> CachedImages:
    """The images of `listing`, decoded under `settings`, from the cache in `folder`: reused when it holds
    exactly these files, else decoded (again) and written there. `cache_dir` is data.cache_dir as configured,
    named when the folder cannot be written. Images that could not be read are a ConfigError naming the first,
    or with `skip_damaged` a warning that counts them."""
    with _lock(folder):  # held until the cache is mapped: an open file outlives a later run's rename
        cached = _reusable(folder, listing, settings)
        if cached is None:
            cached = _build(folder, listing, settings, skip_damaged, cache_dir)
        else:
            log.info("image cache %s reused: %d images", folder, len(cached.manifest.files))
    skipped = cached.manifest.skipped
    if skipped and not skip_damaged:
        raise unreadable_image_error(listing.root, *skipped[0])
    if skipped:
        names = ", ".join(file.path for file, _ in skipped[:SHOWN_SKIPPED])
        log.warning("data.skip_damaged: left out %d image%s that cannot be read: %s%s", len(skipped),
                    "s" if len(skipped) > 1 else "", names, ", ..." if len(skipped) > SHOWN_SKIPPED else "")
    return cached


def _reusable(folder: Path, listing: Listing, settings: CacheSettings) -> Optional[CachedImages]:
    """The cache in `folder` if it is whole and holds what `listing` lists; None (and why, logged) otherwise."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        with _opened(folder / MANIFEST) as file:
            manifest = Manifest.from_json(file.read().decode("utf-8"))
        difference = manifest.differences(listing, settings)
        if difference is not None:
            log.info("image cache %s is out of date (%s): decoding the images again", folder, difference)
            return None
        return CachedImages(_mapped(folder / ARRAY, manifest.shape), manifest)
    except (DamagedCache, OSError, UnicodeDecodeError) as why:
        log.warning("image cache %s is damaged (%s): decoding the images again", folder, why)
        return None


def _mapped(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """images.npy, memory-mapped read-only, once its header says uint8 `shape` in C order and the file is that
    long; DamagedCache otherwise."""
    try:
        with _opened(path) as file:
            version = np.lib.format.read_magic(file)
            if version not in ((1, 0), (2, 0)):
                raise DamagedCache(f"{path.name} has .npy version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            stored_shape, fortran_order, dtype = read_header(file)
            offset, length = file.tell(), os.fstat(file.fileno()).st_size
    except (ValueError, EOFError, SyntaxError) as error:  # numpy's words for a header that is not one
        raise DamagedCache(f"{path.name} is not a .npy file ({error})") from None
    if stored_shape != tuple(shape) or fortran_order or dtype != np.uint8:
        raise DamagedCache(f"{path.name} holds {dtype} {stored_shape}, not uint8 {tuple(shape)}")
    if length != offset + int(np.prod(shape)):
        raise DamagedCache(f"{path.name} has {length} bytes, not {offset + int(np.prod(shape))}")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(shape))


def _opened(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file; DamagedCache if it is anything else: a FIFO would keep
    open() or read() waiting forever, a device would never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open() would wait for a writer
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DamagedCache(f"{path.name} is not a regular file")
    return os.fdopen(fd, "rb")


def _build(folder: Path, listing: Listing, settings: CacheSettings, skip_damaged: bool,
           cache_dir: Optional[str]) -> CachedImages:
    """Decode the images into a temporary folder beside `folder`, then put it in `folder`'s place. A write the
    disk refuses is an OSError naming the file; the temporary folder is removed whatever ends the build."""
    if os.path.lexists(folder) and not stat.S_ISDIR(os.lstat(folder).st_mode):  # no cache could be put there
        raise ConfigError("data.cache_dir", cache_dir, f"a folder this process can write the decoded images to "
                                                       f"({folder} is not a folder: remove it)")
    staging = _staging_folder(folder, cache_dir)
    try:
        manifest = decode_folder(listing, settings, skip_damaged, staging / ARRAY)
        with naming(staging / MANIFEST):
            (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for name in (ARRAY, MANIFEST):
            _synced(staging / name)
        _install(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone once installed
    log.info("image cache %s written: %d images of %s", folder, len(manifest.files),
             "x".join(map(str, manifest.shape[1:])))
    return CachedImages(_mapped(folder / ARRAY, manifest.shape), manifest)


def _staging_folder(folder: Path, cache_dir: Optional[str]) -> Path:
    """A new empty folder beside `folder` to build the cache in, made as mkdir makes folders (0777 less the umask,
    not mkdtemp's 0700), so that the cache it becomes can be read by whoever shares data.cache_dir. Folders that
    runs of this machine left there when they were killed are removed first. A folder that cannot be made is a
    ConfigError for data.cache_dir."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(folder)
        staging = folder.parent / f"{_temporary_prefix('building', folder)}{secrets.token_hex(4)}"
        staging.mkdir()
        return staging
    except OSError as error:
        where = error.filename or folder.parent
        raise ConfigError("data.cache_dir", cache_dir, f"a folder this process can write the decoded images to "
                                                       f"({where}: {error.strerror})") from None


def _install(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`. An older cache there is renamed aside first and removed after; if another run
    puts its own cache there in between (of the same files, decoded the same way), that one stays."""
    try:
        os.rename(staging, folder)  # POSIX: onto a folder only when that is empty
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    aside = Path(tempfile.mkdtemp(prefix=_temporary_prefix("replaced", folder), dir=folder.parent))
    with contextlib.suppress(FileNotFoundError):  # another run has just moved it aside itself
        os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _temporary_prefix(kind: str, folder: Path) -> str:
    """`.KIND-NAME-HOST-PID-`: whose temporary folder it is, so that a later run can tell an abandoned one."""
    return f".{kind}-{folder.name}-{socket.gethostname()}-{os.getpid()}-"


def _remove_abandoned(folder: Path) -> None:
    """Remove the temporary folders beside `folder` of processes of this machine that are no longer running."""
    for kind in ("building", "replaced"):
        prefix = _temporary_prefix(kind, folder).removesuffix(f"{os.getpid()}-")
        for path in folder.parent.glob(f"{prefix}*"):
            pid = path.name[len(prefix):].partition("-")[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _synced(path: Path) -> None:
    with naming(path), open(path, "rb+") as file:
        os.fsync(file.fileno())


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Held while this process checks, builds and maps the cache in `folder`, so that another process wanting it
    at once waits, then reuses it, rather than decoding every image again and renaming this one's cache aside as
    this one maps it. An flock of FOLDER.lock beside it: the kernel lets go of it when its holder is killed, and
    the holder removes the file while it holds it (a waiter then takes the next file). Where no lock can be had (a
    read-only data.cache_dir: nothing can be built there anyway), the cache is read as it is."""
    path = folder.with_name(f"{folder.name}.lock")
    fd = _locked(path, folder)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)


def _locked(path: Path, folder: Path) -> Optional[int]:
    """A descriptor of `path` that holds its flock, once no other process does (saying once that it waits); None
    where `path` cannot be made or the file system has no flock."""
    said = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    log.info("image cache %s is being decoded by another process: waiting for it", folder)
                said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:  # removed by the holder it waited for: lock the next one
            pass
        except OSError:
            os.close(fd)
            return None
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        os.close(fd)
