"""Your own images (data=image_folder): DIR/<class>/<image>, or DIR/train/<class>/<image> with val/ and test/
beside train/ if you have them. PNG, JPEG, BMP and WebP, grey or colour; the class names are the class folders'.

The first run decodes every image into a cache (image_cache): a uint8 array (N, C, H, W) that later runs map from
disk instead of decoding again, while the files stay as they were. The loader hands build_data that memory-mapped
array, as a torchvision set hands it its arrays: the rows of train/, then val/'s and test/'s, each split's rows
together (a flat folder's are all train's, and build_data holds val and test out of them).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from trainer.config import ConfigError
from trainer.data.build import Arrays
from trainer.data.image_cache import CachedImages, cached_images
from trainer.data.image_listing import SPLITS, list_images
from trainer.data.image_manifest import CacheSettings


def image_folder(path: str, image_size: Optional[int | Sequence[int]] = None, channels: Any = "auto",
                 cache_dir: Optional[str] = None, skip_damaged: bool = False) -> Arrays:
    """The images under `path` and their classes. `image_size` (H, W), or one int for a square, resizes every image;
    None requires them to share one size. `channels`: 1 (grey), 3 (colour) or auto (1 when every image is grey).
    `cache_dir`: where the decoded images are kept (None: the user's cache directory). `skip_damaged`: leave out
    the images that cannot be read, with a warning, rather than stop at the first."""
    if not os.path.isdir(path):  # validate() says so first, on the command line; this is for a caller in Python
        raise ConfigError("data.path", path, "the path of a folder that exists")
    if channels not in ("auto", 1, 3) or isinstance(channels, bool):
        raise ConfigError("data.channels", channels, "auto, 1 or 3")
    settings = CacheSettings(str(Path(path).resolve()), _height_and_width(image_size), channels)
    listing = list_images(Path(settings.path))
    return _arrays(cached_images(cache_folder(settings, cache_dir), listing, settings, skip_damaged, cache_dir),
                   listing.class_names)


def cache_folder(settings: CacheSettings, cache_dir: Optional[str]) -> Path:
    """Where the decoded images of `settings` are kept: a folder named by a digest of the settings (the resolved
    DIR, image_size and channels) in `cache_dir`, or by default in the user's cache directory ($XDG_CACHE_HOME, else
    ~/.cache)/trainer/image_folder; outside DIR, so that a read-only data folder needs no writing, and one per
    folder and size, so that runs at other sizes keep their own."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else _user_cache() / "trainer" / "image_folder"
    digest = hashlib.sha256(json.dumps(settings.to_plain(), sort_keys=True).encode()).hexdigest()[:20]
    return base.absolute() / digest


def _user_cache() -> Path:
    """The XDG base directory for caches: $XDG_CACHE_HOME when it is an absolute path (as the spec says), else
    ~/.cache."""
    configured = os.environ.get("XDG_CACHE_HOME", "")
    return Path(configured) if os.path.isabs(configured) else Path.home() / ".cache"


def _height_and_width(image_size: Optional[int | Sequence[int]]) -> Optional[tuple[int, int]]:
    if image_size is None:
        return None
    size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ConfigError("data.image_size", image_size, "null, an integer >= 1, or [H,W], e.g. [32,32]")
    return size[0], size[1]


def _arrays(cached: CachedImages, class_names: list[str]) -> Arrays:
    """The cached rows as Arrays: train's, with val's and test's as the set's own splits where DIR has them. The
    rows of each split are contiguous (the listing's order), so each split is a slice of the mapped array, itself a
    memory-mapped array that reads nothing until it is indexed."""
    labels = np.array([file.label for file in cached.manifest.files], dtype=np.int64)  # (N,)
    counts = [sum(file.split == split for file in cached.manifest.files) for split in SPLITS]
    starts = np.cumsum([0, *counts])
    parts = {split: Arrays(x=cached.images[start:end], y=labels[start:end])
             for split, start, end in zip(SPLITS, starts, starts[1:]) if end > start}
    if "train" not in parts:  # every training image was left out as unreadable (data.skip_damaged)
        raise ConfigError("data.path", cached.manifest.settings.path, "a folder with training images that can be read")
    train = parts["train"]
    return Arrays(x=train.x, y=train.y, val=parts.get("val"), test=parts.get("test"), class_names=class_names)
