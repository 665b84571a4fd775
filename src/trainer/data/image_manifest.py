"""manifest.json of an image folder's cache: what each row of images.npy is, and what the rows were decoded from.

A later run believes the cache only when its manifest is whole and says what the folder says now: the same
settings, class names, and the same files (path, size, modification time, class, split). The manifest is read as a
stranger may have written it (an edit, a disk error, another program's file): every field's type, length and range
is checked, and a manifest that fails any check is a DamagedCache, which the caller answers by decoding again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from trainer.data.image_listing import SPLITS, ImageFile, Listing

FORMAT = 2
"""The manifest's format version; a cache of another version is decoded again. (2: 16-bit images scaled to 8 bits
and photos turned upright by their EXIF orientation, which format 1's caches hold clipped and sideways.)"""
KEYS = {"format", "settings", "shape", "class_names", "files", "skipped"}


class DamagedCache(Exception):
    """A cache that cannot be believed; the message says why."""


@dataclass(frozen=True)
class CacheSettings:
    """What the decoded pixels depend on besides the files: the folder and the loader's settings."""

    path: str
    """DIR, resolved."""
    image_size: Optional[tuple[int, int]]
    """(H, W) every image is resized to; None: the images' own (common) size."""
    channels: Any
    """auto, 1 or 3, as configured (auto is resolved from the images)."""

    def to_plain(self) -> dict:
        return {"path": self.path, "image_size": None if self.image_size is None else list(self.image_size),
                "channels": self.channels}


@dataclass(frozen=True)
class Manifest:
    settings: CacheSettings
    shape: tuple[int, int, int, int]
    """(N, C, H, W) of images.npy."""
    class_names: list[str]
    files: list[ImageFile]
    """One per row of images.npy, in the listing's order."""
    skipped: list[tuple[ImageFile, str]]
    """Files that could not be read (data.skip_damaged=true), each with why; no row of images.npy is theirs."""

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "settings": self.settings.to_plain(), "shape": list(self.shape),
                           "class_names": self.class_names, "files": [_record(file) for file in self.files],
                           "skipped": [[*_record(file), reason] for file, reason in self.skipped]})

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """The manifest in `text`, every field checked; DamagedCache saying what is wrong otherwise."""
        try:
            content = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise DamagedCache(f"its manifest is not JSON ({error})") from None
        _require(isinstance(content, dict) and set(content) == KEYS, "its manifest lacks keys, or has others")
        _require(content["format"] == FORMAT, f"its manifest has format {content['format']!r}, not {FORMAT}")
        settings = content["settings"]
        _require(isinstance(settings, dict) and set(settings) == {"path", "image_size", "channels"}
                 and isinstance(settings["path"], str)
                 and (settings["image_size"] is None or _integers(settings["image_size"], 2))
                 and settings["channels"] in ("auto", 1, 3) and not isinstance(settings["channels"], bool),
                 "its manifest's settings are not a cache's")
        shape, names = content["shape"], content["class_names"]
        _require(_integers(shape, 4) and shape[1] in (1, 3), f"its manifest's shape {shape!r:.80} is not (N, C, H, W)")
        _require(isinstance(names, list) and all(isinstance(name, str) for name in names),
                 "its manifest's class names are not a list of names")
        files = [_image_file(record, len(names), 5) for record in _list(content["files"])]
        skipped = [(_image_file(record, len(names), 6), record[5]) for record in _list(content["skipped"])]
        _require(len(files) == shape[0], f"its manifest lists {len(files)} files for {shape[0]} images")
        size = settings["image_size"]
        return cls(CacheSettings(settings["path"], None if size is None else tuple(size), settings["channels"]),
                   tuple(shape), names, files, skipped)

    def differences(self, listing: Listing, settings: CacheSettings) -> Optional[str]:
        """Why this cache does not hold what `listing` lists under `settings` (files added, removed or changed,
        other class names or settings); None when it does."""
        if self.settings != settings or self.class_names != listing.class_names:
            return "other settings or class folders"
        cached = {file.path: file for file in [*self.files, *(file for file, _ in self.skipped)]}
        now = {file.path: file for file in listing.files}
        added, removed = len(now.keys() - cached.keys()), len(cached.keys() - now.keys())
        changed = sum(now[path] != cached[path] for path in now.keys() & cached.keys())
        if added or removed or changed:
            return f"{added} files added, {removed} removed, {changed} changed"
        skipped = {file.path for file, _ in self.skipped}
        if self.files != [file for file in listing.files if file.path not in skipped]:
            return "its rows are not in the listing's order"
        return None


def _record(file: ImageFile) -> list:
    return [file.path, file.size, file.mtime_ns, file.label, file.split]


def _image_file(record: Any, num_classes: int, length: int) -> ImageFile:
    """A file's record [path, size, mtime_ns, label, split] (and, of a skipped file, why), checked."""
    _require(isinstance(record, list) and len(record) == length, "its manifest has a file record of another shape")
    path, size, mtime_ns, label, split, *reason = record
    _require(isinstance(path, str) and _integers([size, mtime_ns, label], 3, minimum=0) and label < num_classes
             and split in SPLITS and all(isinstance(text, str) for text in reason),
             f"its manifest has a file record {record!r:.80} that is not one")
    return ImageFile(path, size, mtime_ns, label, split)


def _list(value: Any) -> list:
    _require(isinstance(value, list), "its manifest's files are not a list")
    return value


def _integers(value: Any, length: int, minimum: int = 1) -> bool:
    """A list of `length` ints (not bools) each at least `minimum`."""
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= minimum for n in value))


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise DamagedCache(reason)
