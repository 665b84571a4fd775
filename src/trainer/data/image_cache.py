"""An image folder's decoded pixels, kept between runs: a folder holding images.npy (uint8 (N, C, H, W), read
memory-mapped) and manifest.json (image_manifest), reused while the image files stay as they were.

A cache is built in a temporary folder beside its place and renamed into it once whole (its files flushed and
synced), so a run killed while decoding, or two runs building at once, leave no folder that a later run could take
for a cache. A later run checks what it finds all the same (the manifest as a stranger's file; images.npy's header,
dtype, shape and length against it) and decodes again whatever fails a check, saying why in one line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from trainer.config import ConfigError
from trainer.data.image_decoding import decode_folder, unreadable_image_error
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
        manifest = Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8"))
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
        with open(path, "rb") as file:
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


def _build(folder: Path, listing: Listing, settings: CacheSettings, skip_damaged: bool,
           cache_dir: Optional[str]) -> CachedImages:
    """Decode the images into a temporary folder beside `folder`, then put it in `folder`'s place."""
    staging = _staging_folder(folder, cache_dir)
    try:
        manifest = decode_folder(listing, settings, skip_damaged, staging / ARRAY)
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
    """A new empty folder beside `folder` to build the cache in. Folders that runs of this machine left there
    when they were killed are removed first. A folder that cannot be made is a ConfigError for data.cache_dir."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(folder)
        return Path(tempfile.mkdtemp(prefix=_temporary_prefix("building", folder), dir=folder.parent))
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
    with open(path, "rb+") as file:
        os.fsync(file.fileno())
