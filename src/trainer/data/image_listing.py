"""An image folder's files, without opening them: DIR/<class>/<image>, or DIR/train|val|test/<class>/<image>.

The listing (each file's path, size, modification time, class and split) is made on every run from the file
system's metadata alone: it is what decides whether the decoded cache of an earlier run still holds these files.
Class names are the class folders' names, sorted, and a class's index is its place in that order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trainer.config import ConfigError
from trainer.data.image_files import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")
"""The split folders a DIR/train/ layout may have, in the order their images are cached."""
EXPECTED_LAYOUT = ("a folder of class folders holding images (PNG, JPEG, BMP or WebP): DIR/<class>/<image>, or "
                   "DIR/train/<class>/<image> with val/ and test/ beside train/ if you have them")


@dataclass(frozen=True)
class ImageFile:
    """One image file as the listing sees it."""

    path: str
    """Relative to DIR, with / between folders."""
    size: int
    """Bytes."""
    mtime_ns: int
    label: int
    """The index of its class folder's name among the class names."""
    split: str
    """train (a flat folder's every file), val or test: the split folder it is in."""


@dataclass(frozen=True)
class Listing:
    root: Path
    """DIR, resolved."""
    files: list[ImageFile]
    """Train's files, then val's, then test's; by path within each."""
    class_names: list[str]


def list_images(root: Path) -> Listing:
    """The image files under `root` (its class folders, or those of its split folders). Hidden files and folders
    and files of other suffixes are left alone. A folder with no images, with fewer than 2 classes, or with a
    split folder holding none, or beside train/ a folder that is not val/ or test/, or a class folder in val/ or
    test/ that train/ lacks, is a ConfigError for data.path."""
    root = root.resolve()
    folders = {"train": root}
    if (root / "train").is_dir():
        folders = {split: root / split for split in SPLITS if (root / split).is_dir()}
        strays = [name for name in _visible_folders(root) if name not in SPLITS]
        if strays:
            raise ConfigError("data.path", str(root), f"{EXPECTED_LAYOUT} (it has train/, and {strays[0]}/ beside it)")
    found = {split: list(_class_files(root, folder, split)) for split, folder in folders.items()}
    for split, files in found.items():
        if not files:
            raise ConfigError("data.path", str(root), f"{EXPECTED_LAYOUT} ({_shown(folders[split], root)} holds "
                                                      f"no images)")
    classes = {split: {class_name for class_name, _ in files} for split, files in found.items()}
    class_names = sorted(set().union(*classes.values()))
    untrained = [name for name in class_names if name not in classes["train"]]
    if untrained:  # a class the model never sees a training image of, which validation and test would count
        where = " and ".join(f"{split}/" for split in folders if untrained[0] in classes[split])
        raise ConfigError("data.path", str(root), f"{EXPECTED_LAYOUT} (the class {untrained[0]!r}, in {where}, is "
                                                  f"not in train/: each class needs training images)")
    if len(class_names) < 2:
        raise ConfigError("data.path", str(root), f"{EXPECTED_LAYOUT}, in at least 2 class folders (its images "
                                                  f"are all of the class {class_names[0]!r})")
    label = {name: index for index, name in enumerate(class_names)}
    files = [ImageFile(file.path, file.size, file.mtime_ns, label[class_name], file.split)
             for split in folders for class_name, file in found[split]]
    return Listing(root=root, files=files, class_names=class_names)


def image_paths(folder: Path) -> Iterator[Path]:
    """The image files in `folder` and its subfolders, by path. Hidden files and folders (.DS_Store, the ._NAME
    AppleDouble files a Mac leaves beside each file it copies to another disk, .git) and files of other suffixes
    are left alone. Training lists each class folder with it, and `predict` a folder of images, so that both take
    the same files."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath) / name


def _class_files(root: Path, folder: Path, split: str):
    """(class name, ImageFile with label 0) for each image under each class folder of `folder`, by path; the files
    of a class folder's own subfolders count as that class's."""
    for class_name in _visible_folders(folder):
        for path in image_paths(folder / class_name):
            try:
                status = path.stat()  # a link: the file it leads to
            except OSError:  # a link that leads nowhere, or round in a loop: an image that cannot be read, which
                status = path.lstat()  # decoding names, or leaves out with data.skip_damaged, as it does a damaged one
            yield class_name, ImageFile(path.relative_to(root).as_posix(), status.st_size, status.st_mtime_ns, 0,
                                        split)


def _visible_folders(folder: Path) -> list[str]:
    """The names of the folders in `folder`, sorted, but for hidden ones (.git, .ipynb_checkpoints)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _shown(folder: Path, root: Path) -> str:
    return "it" if folder == root else f"{folder.name}/"
