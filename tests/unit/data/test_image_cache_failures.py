"""The image folder's cache where the disk or the cache folder misbehave: its disk space reserved before the threads
write it (a full disk is an OSError naming the file, not SIGBUS), refused writes naming their file, a place that
is not a folder, a FIFO where a cache file should be, the permissions of a shared cache_dir, and a lock that cannot
be had. (test_image_cache.py: the cache itself; tests/e2e/test_image_cache_processes.py: processes at once, `train`
on a full disk.)"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import resource
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image_folder
from trainer.config import ConfigError
from trainer.data import image_decoding
from trainer.data.image_cache import ARRAY, MANIFEST
from trainer.data.image_folder import cache_folder, image_folder
from trainer.data.image_manifest import CacheSettings


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images", per_class=4)


def load(folder: Path, tmp_path: Path):
    return image_folder(str(folder), cache_dir=str(tmp_path / "cache"))


def the_cache(folder: Path, tmp_path: Path) -> Path:
    return cache_folder(CacheSettings(str(folder.resolve()), None, "auto"), str(tmp_path / "cache"))


def without_posix_fallocate(monkeypatch) -> None:
    monkeypatch.delattr(os, "posix_fallocate")


def posix_fallocate_unsupported(monkeypatch) -> None:
    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)


@pytest.mark.parametrize("file_system", [lambda monkeypatch: None, without_posix_fallocate,
                                         posix_fallocate_unsupported], ids=["fallocate", "no-fallocate", "eopnotsupp"])
def test_the_array_s_disk_space_is_taken_before_a_row_is_decoded(tmp_path, monkeypatch, file_system):
    folder = write_image_folder(tmp_path / "images", per_class=4, size=(64, 64))  # 144 KiB: many blocks
    allocated, decode = [], image_decoding._decode

    def reserved_first(root, files, images, skip_damaged):
        status = os.stat(images.filename)
        allocated.append(status.st_blocks * 512 >= status.st_size)  # not sparse: no page left to take later
        return decode(root, files, images, skip_damaged)

    monkeypatch.setattr(image_decoding, "_decode", reserved_first)
    expected = np.array(image_folder(str(folder), cache_dir=str(tmp_path / "expected")).x)
    file_system(monkeypatch)
    allocated.clear()
    np.testing.assert_array_equal(load(folder, tmp_path).x, expected)  # the header survives the zeros
    assert allocated == [True]


def test_a_full_disk_is_an_os_error_naming_the_array_before_decoding_and_leaves_nothing(folder, tmp_path,
                                                                                        monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as error:
        load(folder, tmp_path)
    assert error.value.errno == errno.ENOSPC and Path(error.value.filename).name == ARRAY
    assert list((tmp_path / "cache").iterdir()) == []  # neither the temporary folder nor the lock


def test_a_file_size_limit_is_an_os_error_naming_the_array(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=4, size=(32, 32))  # 12*3*32*32 = 36 KiB
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # (Python ignores SIGXFSZ: a write is EFBIG)
    try:
        with pytest.raises(OSError) as error:
            load(folder, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert error.value.errno == errno.EFBIG and Path(error.value.filename).name == ARRAY
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_full_disk_while_writing_the_manifest_names_it(folder, tmp_path, monkeypatch):
    write_text = pathlib.Path.write_text

    def full(path, *args, **kwargs):
        if path.name == MANIFEST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() says it: no file named
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError) as error:
        load(folder, tmp_path)
    assert error.value.errno == errno.ENOSPC and Path(error.value.filename).name == MANIFEST
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_file_in_the_cache_s_place_is_one_line_naming_data_cache_dir(folder, tmp_path):
    place = the_cache(folder, tmp_path)
    place.parent.mkdir(parents=True)
    place.write_text("not a cache")
    with pytest.raises(ConfigError) as error:
        load(folder, tmp_path)
    assert str(error.value) == (f"data.cache_dir: got '{tmp_path / 'cache'}', expected a folder this process can "
                                f"write the decoded images to ({place} is not a folder: remove it)")
    assert place.read_text() == "not a cache"


@pytest.mark.parametrize("name", [ARRAY, MANIFEST])
def test_a_fifo_in_the_cache_is_a_damaged_cache_not_a_hang(folder, tmp_path, caplog, name):
    expected = np.array(load(folder, tmp_path).x)
    fifo = the_cache(folder, tmp_path) / name
    fifo.unlink()
    os.mkfifo(fifo)
    loaded = []
    thread = threading.Thread(target=lambda: loaded.append(np.array(load(folder, tmp_path).x)), daemon=True)
    with caplog.at_level(logging.WARNING):
        thread.start()
        thread.join(20)
    if thread.is_alive():  # waiting in open(): a writer lets it go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(20)
        pytest.fail(f"loading waited on the FIFO {name}")
    np.testing.assert_array_equal(loaded[0], expected)
    assert f"is damaged ({name} is not a regular file): decoding the images again" in caplog.text


def test_the_cache_is_as_readable_as_the_umask_allows_not_mkdtemp_s_0700(folder, tmp_path):
    umask = os.umask(0o022)
    try:
        load(folder, tmp_path)
    finally:
        os.umask(umask)
    cache = the_cache(folder, tmp_path)
    assert [oct(path.stat().st_mode & 0o777) for path in (cache, cache / ARRAY, cache / MANIFEST)] == [
        "0o755", "0o644", "0o644"]


def test_a_cache_whose_lock_cannot_be_made_is_read_without_it(folder, tmp_path, monkeypatch):
    expected = np.array(load(folder, tmp_path).x)
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    np.testing.assert_array_equal(load(folder, tmp_path).x, expected)
