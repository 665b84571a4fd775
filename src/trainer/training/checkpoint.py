"""Checkpoints: one plain dict of tensors and plain values, sealed with a digest of its content, written atomically,
read back with weights_only=True and believed only when the digest still matches.

A checkpoint travels (people share best.pt), so a read treats it as a stranger's file: it must be a regular file
(a FIFO would hang the reader), a symlink in a run directory must stay inside it, unpickling may fail in any way,
and the content must hash to the digest written with it. Anything else is a DamagedCheckpoint, one sentence that
says what is wrong, which the commands turn into one line naming their key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Optional

import torch

FORMAT_VERSION = 3
"""The layout of the dict a checkpoint holds. 1: train 0.1's, with neither a format number nor a digest; 2: the
keys `format_version` and `digest` (SHA-256 of everything else, see content_digest), and the config group choices
the run was composed from (`choices`); 3: the engine's `train_seconds` and `starts`, the time trained over every
start of the run so far and how many starts that was."""
DIGEST_KEY, VERSION_KEY = "digest", "format_version"


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be believed: unreadable, not a regular file, altered since it was written."""


class CheckpointNotSaved(OSError):
    """A save the file system refused (full, read-only, over quota, failing): the OS error, with the file's name.
    The checkpoints the save would have replaced are as they were."""


def save_checkpoint(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Seal `payload` with its format version and digest, write it to a temp file in the same folder, fsync it,
    then rename it over `path`: a crash mid-write leaves the previous file intact, never a half-written one. With
    `keep_previous`, the file it replaces is kept as `previous_path(path)`, a fallback should the newest one be
    damaged later. A refused write raises CheckpointNotSaved and leaves no temp file."""
    sealed = {**payload, VERSION_KEY: FORMAT_VERSION}
    sealed[DIGEST_KEY] = content_digest(sealed)
    tmp = _temp_path(path)
    writer = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as file:
            writer = _ErrorKeepingWriter(file)
            torch.save(sealed, writer)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):  # (a read-only file system refuses even the unlink of a missing file)
            tmp.unlink(missing_ok=True)
        # torch reports a failed write as a RuntimeError of its zip writer ("[enforce fail at ...]"): the
        # writer kept the OS error that caused it.
        cause = error if isinstance(error, OSError) else writer.error if writer is not None else None
        if cause is not None:
            raise CheckpointNotSaved(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise


def _temp_path(path: Path) -> Path:
    """Where a save of `path` writes first: .last.pt.PID.tmp beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temp files that saves killed part-way left in `folder` (.last.pt.PID.tmp), and return them. Only
    the run holding the run directory's lock saves there, so before it saves, any such file is a dead save's."""
    stale = [path for path in folder.glob(".*.tmp") if re.fullmatch(r"\..+\.pt\.\d+\.tmp", path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class _ErrorKeepingWriter:
    """The file torch.save writes to, keeping the OSError of a failed write (torch replaces it with its own)."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def previous_path(path: Path) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the file it replaced: last.pt -> last.previous.pt."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def fsync_folder(folder: Path) -> None:
    """Make the renames themselves durable: they live in the folder's entry list. (Windows cannot open a
    folder to sync it; there the renames are as durable as the file system makes them.)"""
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    inside: Optional[Path] = None) -> dict[str, Any]:
    """A checkpoint's dict, read without running any pickled code (weights_only=True), its digest verified and
    brought up to FORMAT_VERSION. `inside`: the run directory a symlink at `path` must not lead out of. Raises
    DamagedCheckpoint saying what is wrong."""
    with _open_regular_file(path, inside) as file:
        try:
            with warnings.catch_warnings():  # (torch warns, over two lines, before refusing a TorchScript archive)
                warnings.filterwarnings("ignore", ".*looks like a TorchScript archive", UserWarning)
                state = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as error:  # a damaged zip or pickle fails in many ways: KeyError, IndexError, ...
            if "TorchScript archives" in str(error):
                raise DamagedCheckpoint("it is a TorchScript graph, as train-export format=torchscript writes, "
                                        "which torch.jit.load runs: not a checkpoint") from None
            raise DamagedCheckpoint(_first_sentence(error)) from None
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f"it holds a {type(state).__name__}, not a dict")
    return _with_named_weights(_upgraded(_verified(state)))


def _open_regular_file(path: Path, inside: Optional[Path]) -> BinaryIO:
    """The file opened for reading, once it is known to be a regular file: a FIFO is opened without waiting for a
    writer and refused, and so is a folder or a device. A symlink leading out of `inside` is refused unopened."""
    if inside is not None and path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(inside.resolve()):
            raise DamagedCheckpoint(f"it is a symlink to {target}, outside its run directory {inside}")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise DamagedCheckpoint(error.strerror or str(error)) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DamagedCheckpoint(f"it is {kind}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def _first_sentence(error: Exception) -> str:
    """torch's first sentence says what is wrong ("... failed finding central directory"); the rest is advice."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(error).__name__


def _verified(state: dict[str, Any]) -> dict[str, Any]:
    """The state without its digest, once the digest matches its content. A state of format 1 has none."""
    if VERSION_KEY not in state:
        if DIGEST_KEY in state:  # format 1 had no digest: the format number's key itself was damaged
            raise DamagedCheckpoint("it has a digest but no format_version")
        return state
    state = dict(state)
    written = state.pop(DIGEST_KEY, None)
    try:
        actual = content_digest(state)
    except TypeError as error:
        raise DamagedCheckpoint(str(error)) from None
    except RecursionError:  # the unpickler nests iteratively, as deep as the file says; hashing recurses
        raise DamagedCheckpoint("it nests lists or dicts too deeply to be train's") from None
    if written != actual:
        raise DamagedCheckpoint("its content does not match the digest written with it: the file was altered or "
                                "damaged after it was saved")
    return state


def _upgraded(state: dict[str, Any]) -> dict[str, Any]:
    """The state in FORMAT_VERSION's layout (without the number), one explicit step per older format, so that
    readers need no checks for keys an older train did not write."""
    version = state.get(VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DamagedCheckpoint(f"its format_version is {version!r}, not a format train writes")
    if version > FORMAT_VERSION:
        raise DamagedCheckpoint(f"it has format {version}, written by a newer train (this one reads formats 1 "
                                f"to {FORMAT_VERSION}): upgrade trainer to read it")
    state = {key: value for key, value in state.items() if key != VERSION_KEY}
    if version == 1 and isinstance(state.get("engine"), dict):  # (not a bare state_dict, which init_from takes)
        # train 0.1 wrote neither the skipped steps nor, at first, the epoch in progress and the data's description.
        state = {"epoch_progress": None, "data": None, "choices": None, **state,
                 "engine": {"skipped_steps": 0, **state["engine"]}}
    if version <= 2 and isinstance(state.get("engine"), dict):
        # Formats 1 and 2 kept no training time: the run counts as started once, its time until then unknown (0).
        state = {**state, "engine": {"train_seconds": 0.0, "starts": 1, **state["engine"]}}
    return state


def _with_named_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The state, once its keys are names and its "model" (when it has one) maps parameter names to tensors: what
    load_state_dict takes, which would fail on anything else with a traceback (an int key has no .startswith). A
    bare state_dict, which init_from takes, is itself such a mapping."""
    weights = state.get("model", state)
    for mapping, what in ((state, "its keys"), (weights, "its model's weights")):
        if not isinstance(mapping, dict) or not all(isinstance(key, str) for key in mapping):
            raise DamagedCheckpoint(f"{what} are not a mapping of names")
    if "model" in state and not all(isinstance(tensor, torch.Tensor) for tensor in weights.values()):
        raise DamagedCheckpoint("its model's weights are not all tensors")
    return state


def content_digest(state: Any) -> str:
    """SHA-256 over a canonical encoding of `state`: every key and plain value with its type, and every tensor's
    dtype, shape and bytes. It depends on the content alone, not on how torch laid the file out, so a flipped
    byte either changes what a reader would get (and the digest) or nothing a reader uses."""
    hasher = hashlib.sha256()
    _feed(hasher, state)
    return hasher.hexdigest()


def _feed(hasher: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise TypeError(f"it holds a {value.layout} tensor, which train never writes")
        if value.is_meta:  # (map_location leaves it on the meta device: a tensor without data)
            raise TypeError("it holds a tensor of the meta device, without data, which train never writes")
        tensor = value.detach().to("cpu").reshape(-1)
        if tensor.numel() > 0 and tensor.stride(0) != 1:  # (a one-element tensor may keep any stride)
            tensor = torch.empty_like(tensor, memory_format=torch.contiguous_format).copy_(tensor)
        hasher.update(f"T{tensor.dtype}{tuple(value.shape)};".encode())
        hasher.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        hasher.update(b"D%d;" % len(value))
        for key in sorted(value, key=lambda key: (type(key).__name__, repr(key))):
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, (list, tuple)):  # (torch.Size is a tuple)
        hasher.update(b"%s%d;" % (b"L" if isinstance(value, list) else b"U", len(value)))
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        hasher.update(b"S%d;" % len(encoded) + encoded)
    elif isinstance(value, bool):
        hasher.update(b"B%d;" % value)
    elif isinstance(value, int):
        hasher.update(b"I%d;" % value)
    elif isinstance(value, float):
        hasher.update(b"F%s;" % value.hex().encode())
    elif value is None:
        hasher.update(b"N;")
    elif isinstance(value, torch.dtype):
        hasher.update(f"Y{value};".encode())
    else:
        raise TypeError(f"it holds a {type(value).__name__}, which train never writes")

