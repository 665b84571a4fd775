"""The image folder's cache: decoded once and reused, decoded again when a file is added, removed or changed or the
cache is damaged, written so that a killed or concurrent build leaves nothing half-made, and kept outside the data
folder (a read-only one works; an unwritable cache_dir is one line)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image_folder
from trainer.config import ConfigError
from trainer.data import image_decoding
from trainer.data.image_cache import ARRAY, MANIFEST
from trainer.data.image_folder import cache_folder, image_folder
from trainer.data.image_manifest import CacheSettings, DamagedCache, Manifest


@pytest.fixture
def decoded(monkeypatch) -> list[Path]:
    """The files decoded (their pixels read) since the test began."""
    files, read_pixels = [], image_decoding.read_pixels

    def counted(path, *args):
        files.append(path)
        return read_pixels(path, *args)

    monkeypatch.setattr(image_decoding, "read_pixels", counted)
    return files


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images", per_class=4)


def load(folder: Path, tmp_path: Path, **settings):
    return image_folder(str(folder), cache_dir=str(tmp_path / "cache"), **settings)


def the_cache(folder: Path, tmp_path: Path) -> Path:
    return cache_folder(CacheSettings(str(folder.resolve()), None, "auto"), str(tmp_path / "cache"))


def test_a_second_load_decodes_nothing_and_says_so(folder, tmp_path, decoded, caplog):
    first = load(folder, tmp_path)
    assert len(decoded) == 12
    decoded.clear()
    with caplog.at_level(logging.INFO):
        again = load(folder, tmp_path)
    assert decoded == []
    assert [r.getMessage() for r in caplog.records] == [f"image cache {the_cache(folder, tmp_path)} reused: 12 images"]
    np.testing.assert_array_equal(again.x, first.x)
    assert sorted(p.name for p in the_cache(folder, tmp_path).parent.iterdir()) == [the_cache(folder, tmp_path).name]


def touch_later(path: Path) -> None:
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def add(folder: Path) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "red" / "new.png")


def remove(folder: Path) -> None:
    (folder / "green" / "001.png").unlink()


def change(folder: Path) -> None:
    path = folder / "blue" / "002.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(path)
    touch_later(path)  # a file rewritten within the file system's time resolution: its size may differ too


def only_touch(folder: Path) -> None:
    touch_later(folder / "blue" / "002.png")


@pytest.mark.parametrize("edit, rows, message", [
    (add, 13, "1 files added, 0 removed, 0 changed"),
    (remove, 11, "0 files added, 1 removed, 0 changed"),
    (change, 12, "0 files added, 0 removed, 1 changed"),
    (only_touch, 12, "0 files added, 0 removed, 1 changed"),
])
def test_a_file_added_removed_or_changed_decodes_the_folder_again(folder, tmp_path, decoded, caplog, edit, rows,
                                                                   message):
    load(folder, tmp_path)
    edit(folder)
    decoded.clear()
    with caplog.at_level(logging.INFO):
        arrays = load(folder, tmp_path)
    assert len(decoded) == rows and len(arrays.x) == rows
    assert f"image cache {the_cache(folder, tmp_path)} is out of date ({message}): decoding the images again" in [
        r.getMessage() for r in caplog.records]
    if edit is change:
        assert (arrays.x[2] == 9).all()  # blue/002.png, the third row
    assert load(folder, tmp_path).x.shape[0] == rows and len(decoded) == rows  # and then reused


def truncate_the_array(cache: Path) -> None:
    with open(cache / ARRAY, "rb+") as file:
        file.truncate(os.path.getsize(cache / ARRAY) - 1)


def lengthen_the_array(cache: Path) -> None:
    with open(cache / ARRAY, "ab") as file:
        file.write(b"\0")


def edit_the_manifest(key: str, value):
    def edit(cache: Path) -> None:
        manifest = json.loads((cache / MANIFEST).read_text())
        manifest[key] = value
        (cache / MANIFEST).write_text(json.dumps(manifest))
    return edit


def relabel_a_file(cache: Path) -> None:
    manifest = json.loads((cache / MANIFEST).read_text())
    manifest["files"][0][3] = 2
    (cache / MANIFEST).write_text(json.dumps(manifest))


DAMAGE = {
    "truncated-array": (truncate_the_array, "images.npy has 2431 bytes, not 2432"),
    "lengthened-array": (lengthen_the_array, "images.npy has 2433 bytes, not 2432"),
    "array-of-text": (lambda cache: (cache / ARRAY).write_text("hello"), "images.npy is not a .npy file"),
    "array-removed": (lambda cache: (cache / ARRAY).unlink(), "No such file or directory"),
    "garbage-json": (lambda cache: (cache / MANIFEST).write_text("{not json"), "its manifest is not JSON"),
    "not-utf8": (lambda cache: (cache / MANIFEST).write_bytes(b"\xff\xfe"), "codec can't decode"),
    "other-format": (edit_the_manifest("format", 1), "its manifest has format 1, not 2"),
    "other-shape": (edit_the_manifest("shape", [12, 3, 8, 9]), "images.npy holds uint8 (12, 3, 8, 8), not uint8"),
    "shape-of-text": (edit_the_manifest("shape", "12x3x8x8"), "its manifest's shape '12x3x8x8' is not"),
    "files-dropped": (edit_the_manifest("files", []), "its manifest lists 0 files for 12 images"),
    "bool-for-a-number": (edit_the_manifest("skipped", [["a.png", True, 0, 0, "train", "x"]]), "a file record"),
}


@pytest.mark.parametrize("damage, reason", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_cache_is_decoded_again_never_half_believed(folder, tmp_path, decoded, caplog, damage, reason):
    expected = np.array(load(folder, tmp_path).x)
    damage(the_cache(folder, tmp_path))
    decoded.clear()
    with caplog.at_level(logging.WARNING):
        arrays = load(folder, tmp_path)
    assert len(decoded) == 12
    np.testing.assert_array_equal(arrays.x, expected)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"image cache {the_cache(folder, tmp_path)} is damaged (")
    assert reason in warning and warning.endswith("): decoding the images again")


def test_a_relabelled_file_in_the_manifest_is_out_of_date(folder, tmp_path, decoded):
    load(folder, tmp_path)
    relabel_a_file(the_cache(folder, tmp_path))
    decoded.clear()
    assert load(folder, tmp_path).y[0] == 0 and len(decoded) == 12


def test_a_build_killed_while_decoding_leaves_no_cache_and_nothing_beside_it(folder, tmp_path, monkeypatch):
    calls = []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return np.zeros((3, 8, 8), np.uint8)

    monkeypatch.setattr(image_decoding, "read_pixels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(folder, tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    assert load(folder, tmp_path).x.shape == (12, 3, 8, 8)


def test_a_killed_process_s_temporary_folder_is_removed_by_the_next_build(folder, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cache = the_cache(folder, tmp_path)
    cache.parent.mkdir(parents=True)
    abandoned = cache.parent / f".building-{cache.name}-{socket.gethostname()}-{dead.stdout.strip()}-x1"
    abandoned.mkdir()
    (abandoned / ARRAY).write_bytes(b"half")
    load(folder, tmp_path)
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]


def test_two_builds_at_once_both_succeed_and_leave_one_whole_cache(folder, tmp_path):
    results, errors = [], []

    def build():
        try:
            results.append(np.array(load(folder, tmp_path).x))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 2
    np.testing.assert_array_equal(results[0], results[1])
    cache = the_cache(folder, tmp_path)
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]
    Manifest.from_json((cache / MANIFEST).read_text())  # whole


def test_a_read_only_data_folder_works_with_the_cache_in_xdg_cache_home(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(folder.rglob("*"))
    for path in [folder, *before]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        arrays = image_folder(str(folder))
    finally:
        for path in [folder, *before]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert arrays.x.shape == (12, 3, 8, 8)
    assert sorted(folder.rglob("*")) == before
    assert Path(arrays.x.filename).is_relative_to(tmp_path / "xdg" / "trainer" / "image_folder")


def test_an_unwritable_cache_dir_is_one_line_naming_data_cache_dir(folder, tmp_path):
    (tmp_path / "a-file").write_text("")
    cache_dir = tmp_path / "a-file" / "cache"  # a folder inside a file: refused to root as to anyone
    with pytest.raises(ConfigError) as error:
        image_folder(str(folder), cache_dir=str(cache_dir))
    assert str(error.value) == (f"data.cache_dir: got '{cache_dir}', expected a folder this process can write the "
                                f"decoded images to ({cache_dir}: Not a directory)")


def test_skipped_files_are_remembered_and_refused_when_skipping_is_turned_off(folder, tmp_path, decoded):
    (folder / "red" / "000.png").write_text("not an image")
    assert len(load(folder, tmp_path, skip_damaged=True).x) == 11
    decoded.clear()
    assert len(load(folder, tmp_path, skip_damaged=True).x) == 11 and decoded == []  # reused, not read again
    with pytest.raises(ConfigError, match=f"^data.path: got '{folder}/red/000.png', expected a PNG"):
        load(folder, tmp_path)


def test_the_manifest_round_trips_and_refuses_a_label_beyond_the_classes(folder, tmp_path):
    load(folder, tmp_path)
    text = (the_cache(folder, tmp_path) / MANIFEST).read_text()
    assert Manifest.from_json(text).to_json() == text
    content = json.loads(text)
    content["files"][0][3] = 3  # 3 classes: 0, 1, 2
    with pytest.raises(DamagedCache, match="a file record"):
        Manifest.from_json(json.dumps(content))
