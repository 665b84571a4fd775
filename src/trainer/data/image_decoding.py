"""An image folder decoded, once, into a uint8 array (N, C, H, W) on disk: the pixels its cache holds.

Two passes. The headers first, in this thread (a few bytes per file): they give each image's size, for the check
that all share one (or data.image_size resizes them), and its mode, for data.channels=auto (1 when every image is
grey, else 3). Then the pixels, into a memory-mapped .npy file, by a thread per CPU this process may use: Pillow
releases the GIL while it decodes and resizes, so threads decode as fast as processes do, and they write straight
into the mapped array, start at once, and fork no process holding torch's threads. Measured on 2 CPUs:

    3,000 64x64 PNGs               one thread 0.80 s   2 threads 0.50 s   2 processes 0.48 s (with their start)
    1,000 256x256 JPEGs -> 64x64   one thread 1.00 s   2 threads 0.46 s   2 processes 0.52 s
"""

from __future__ import annotations

import contextlib
import errno
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from trainer.config import ConfigError
from trainer.data.image_files import ImageHeader, UnreadableImage, image_header, read_pixels
from trainer.data.image_listing import ImageFile, Listing
from trainer.data.image_manifest import CacheSettings, Manifest

ROWS_PER_TASK = 64
"""Images a thread decodes per task: enough to make the pool's bookkeeping negligible, few enough to stop soon."""
COPY_ROWS = 1024
"""Rows copied at a time when rows of files that failed to decode are taken out of the array."""
ZEROS = 1 << 20
"""Bytes of zeros written at a time to reserve an array's disk space where posix_fallocate cannot."""


def decode_folder(listing: Listing, settings: CacheSettings, skip_damaged: bool, array_path: Path) -> Manifest:
    """Decode every listed image into a new .npy file at `array_path`, uint8 (N, C, H, W), in the listing's order;
    the manifest of what it holds. An unreadable image is a ConfigError naming it, or with `skip_damaged` is left
    out (and listed in the manifest's `skipped`). Images of different sizes with no data.image_size are a
    ConfigError naming two of them."""
    headers: dict[str, ImageHeader] = {}
    skipped: list[tuple[ImageFile, str]] = []
    for file in listing.files:
        try:
            headers[file.path] = image_header(listing.root / file.path)
        except UnreadableImage as error:
            if not skip_damaged:
                raise unreadable_image_error(listing.root, file, error.reason) from None
            skipped.append((file, error.reason))
    readable = [file for file in listing.files if file.path in headers]
    _require_some(listing, readable, skipped)
    height, width = settings.image_size or _common_size(listing.root, readable, headers)
    grey = all(headers[file.path].grey for file in readable)
    channels = settings.channels if settings.channels != "auto" else 1 if grey else 3
    images = _new_array(array_path, (len(readable), channels, height, width))
    failed = _decode(listing.root, readable, images, skip_damaged)
    if failed and not skip_damaged:
        row, reason = failed[0]
        raise unreadable_image_error(listing.root, readable[row], reason)
    if failed:
        skipped += [(readable[row], reason) for row, reason in failed]
        failed_rows = {row for row, _ in failed}
        readable = [file for row, file in enumerate(readable) if row not in failed_rows]
        _require_some(listing, readable, skipped)
        images = _without_rows(images, sorted(failed_rows), array_path)
    images.flush()
    order = {file.path: position for position, file in enumerate(listing.files)}
    return Manifest(settings, images.shape, listing.class_names, readable,
                    sorted(skipped, key=lambda item: order[item[0].path]))


def _new_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 .npy file at `path`, memory-mapped for writing, its disk space reserved before a row is written.
    Left sparse, its pages would take their blocks only as the threads write them, and a disk or quota that fills
    up meanwhile kills the process with SIGBUS (no message, its temporary folder left behind); reserved, a full
    disk is an OSError naming the file, here."""
    with naming(path):
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        with open(path, "rb+") as file:
            _reserve(file.fileno(), images.offset, images.nbytes)
    return images


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError while writing `path` names it: a write's own says only, say, 'No space left on device', and a
    refused write ends the command in one line naming its file (cli.failures)."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None


def unreadable_image_error(root: Path, file: ImageFile, reason: str) -> ConfigError:
    return ConfigError("data.path", str(root / file.path),
                       f"a PNG, JPEG, BMP or WebP image that can be read ({reason}); remove it, or set "
                       f"data.skip_damaged=true to leave out the images that cannot be read")


def decoding_threads() -> int:
    """A thread per CPU this process may run on (its affinity: a Slurm job's binding, taskset), not the machine's.
    (training.threads.usable_cpus, a layer above data, also shares the CPUs among torchrun's processes: here one
    process decodes while the others wait for its cache.)"""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode(root: Path, files: list[ImageFile], images: np.ndarray, skip_damaged: bool) -> list[tuple[int, str]]:
    """Each file decoded into its row of `images` (N, C, H, W) by a pool of threads, with a progress bar on a
    terminal; the rows that could not be, with why, by row. Unless `skip_damaged`, the first failure stops the rest."""
    channels, height, width = images.shape[1:]

    def decode_rows(rows: range) -> list[tuple[int, str]]:
        failed = []
        for row in rows:
            try:
                images[row] = read_pixels(root / files[row].path, channels, height, width)
            except UnreadableImage as error:
                failed.append((row, error.reason))
                if not skip_damaged:
                    break
        return failed

    tasks = [range(start, min(start + ROWS_PER_TASK, len(files))) for start in range(0, len(files), ROWS_PER_TASK)]
    failed: list[tuple[int, str]] = []
    pool = ThreadPoolExecutor(decoding_threads(), thread_name_prefix="decode")
    try:
        with tqdm(total=len(files), desc="decoding images", unit="image", leave=False, disable=None) as bar:
            futures = {pool.submit(decode_rows, rows): len(rows) for rows in tasks}
            for future in as_completed(futures):
                failed += future.result()
                bar.update(futures[future])
                if failed and not skip_damaged:
                    break
    finally:
        pool.shutdown(cancel_futures=True)  # on a failure or Ctrl-C: the tasks not yet started are dropped
    return sorted(failed)


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate `length` bytes of the file from `offset`: posix_fallocate, or zeros written where it is missing
    (macOS) or the file system cannot (EOPNOTSUPP, EINVAL)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, offset, length)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    for start in range(offset, offset + length, ZEROS):
        os.pwrite(fd, bytes(min(ZEROS, offset + length - start)), start)


def _common_size(root: Path, files: list[ImageFile], headers: dict[str, ImageHeader]) -> tuple[int, int]:
    """(H, W) that every image has; a ConfigError for data.image_size naming two that differ otherwise."""
    first = headers[files[0].path]
    for file in files[1:]:
        other = headers[file.path]
        if (other.height, other.width) != (first.height, first.width):
            raise ConfigError("data.image_size", None,
                              f"[H,W] to resize every image to, e.g. data.image_size=[{first.height},{first.width}]: "
                              f"the images differ in size ({root / files[0].path} is {first.height}x{first.width}, "
                              f"{root / file.path} is {other.height}x{other.width}, as HxW)")
    return first.height, first.width


def _require_some(listing: Listing, readable: list[ImageFile], skipped: list[tuple[ImageFile, str]]) -> None:
    if not readable:
        file, reason = skipped[0]
        raise ConfigError("data.path", str(listing.root), f"a folder holding images that can be read (none of its "
                                                          f"{len(listing.files)} can: {file.path}: {reason})")


def _without_rows(images: np.memmap, rows: list[int], array_path: Path) -> np.memmap:
    """`images` without `rows` (images that failed to decode), written in its place at `array_path`."""
    kept = np.setdiff1d(np.arange(len(images)), rows)
    compact_path = array_path.with_name(f"compact-{array_path.name}")
    compact = _new_array(compact_path, (len(kept), *images.shape[1:]))
    for start in range(0, len(kept), COPY_ROWS):
        compact[start:start + COPY_ROWS] = images[kept[start:start + COPY_ROWS]]
    compact.flush()
    os.replace(compact_path, array_path)
    return compact
