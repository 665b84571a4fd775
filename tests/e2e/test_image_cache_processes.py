"""The image folder's cache between processes and on a disk that refuses it: processes wanting the same cache at
once take turns (one decodes, the others wait and reuse it; a killed one lets the next go on), and `train` whose
cache cannot be written ends in one line naming the file, exit code 1: a full disk (a small tmpfs) and a file size
limit. (tests/unit/data/test_image_cache_failures.py: the same refusals in one process.)"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_image_folder
from helpers.commands import TRAIN

LOADER = """
import logging, sys, time
from pathlib import Path
from trainer.data import image_decoding
from trainer.data.image_folder import image_folder

folder, cache_dir, delay, marks, name = sys.argv[1:]
logging.basicConfig(level=logging.INFO, format="%(message)s")
read_pixels = image_decoding.read_pixels

def slow(path, *args):
    (Path(marks) / f"{name}.decoding").touch()
    time.sleep(float(delay))
    return read_pixels(path, *args)

image_decoding.read_pixels = slow
(Path(marks) / f"{name}.ready").touch()
while not (Path(marks) / "go").exists():
    time.sleep(0.01)
print(image_folder(folder, cache_dir=cache_dir).x.shape)
"""
"""Loads DIR through the Python API once MARKS/go exists, decoding each image DELAY seconds slower."""


def loader(folder: Path, tmp_path: Path, delay: float, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOADER, str(folder), str(tmp_path / "cache"), str(delay),
                             str(tmp_path), name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.02)


def test_processes_loading_a_folder_at_once_decode_it_once(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=4)
    processes = [loader(folder, tmp_path, 0.2, name) for name in ("a", "b")]
    for name, process in zip("ab", processes):
        wait_for(tmp_path / f"{name}.ready", process)
    (tmp_path / "go").touch()
    logs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], logs
    assert [out for out, _ in logs] == ["(12, 3, 8, 8)\n"] * 2
    written = [" written: 12 images" in err for _, err in logs]
    assert sorted(written) == [False, True], logs  # one decoded, the other waited and reused its cache
    waited = logs[written.index(False)][1]
    assert "is being decoded by another process: waiting for it" in waited and " reused: 12 images" in waited
    [cache] = (tmp_path / "cache").iterdir()  # no temporary folder, no lock file
    assert cache.is_dir() and sorted(path.name for path in cache.iterdir()) == ["images.npy", "manifest.json"]


def test_a_process_killed_while_decoding_lets_the_waiting_one_decode(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=4)
    (tmp_path / "go").touch()
    holder = loader(folder, tmp_path, 60, "a")
    wait_for(tmp_path / "a.decoding", holder)
    waiting = loader(folder, tmp_path, 0, "b")
    wait_for(tmp_path / "b.ready", waiting)
    time.sleep(2)  # in flock by now
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "waiting for it" in err and " written: 12 images" in err
    names = [path.name for path in (tmp_path / "cache").iterdir()]
    # the cache and no lock file; the killed one's temporary folder may stay for the next build to remove (it
    # is removed only once its process is gone, not a zombie its parent has yet to wait for)
    assert len([name for name in names if not name.startswith(".building-")]) == 1, names


def train(tmp_path: Path, *args: str, limit_file_size: int | None = None) -> subprocess.CompletedProcess:
    def limited() -> None:
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    return subprocess.run([TRAIN, "data=image_folder", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                           f"hydra.run.dir={tmp_path / 'run'}", *args], cwd=tmp_path,
                          env=env | {"OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")},
                          capture_output=True, text=True, timeout=300, preexec_fn=limited)


def one_line_refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_train_on_a_full_cache_disk_is_one_line_naming_the_array_not_a_bus_error(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=10, size=(256, 256))  # 30*3*256*256 = 5.6 MiB
    cache = tmp_path / "cache"
    cache.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(cache)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a 4 MiB tmpfs here")
    try:
        result = train(tmp_path, f"data.path={folder}", f"data.cache_dir={cache}")
        left = os.listdir(cache)
    finally:
        subprocess.run(["umount", str(cache)], check=True)
    assert result.returncode != 128 + signal.SIGBUS and result.returncode != -signal.SIGBUS, result.stderr
    line = one_line_refusal(result)
    assert line.startswith(f"train: error: could not write {cache}/.building-"), line
    assert "/images.npy: No space left on device (ENOSPC); nothing was trained yet: make room there" in line
    assert left == []


def test_train_under_a_file_size_limit_is_one_line_naming_the_array(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=10, size=(64, 64))  # 30*3*64*64 = 360 KiB
    line = one_line_refusal(train(tmp_path, f"data.path={folder}", limit_file_size=200_000))
    assert line.startswith(f"train: error: could not write {tmp_path / 'xdg' / 'trainer' / 'image_folder'}/"), line
    assert "/images.npy: File too large (EFBIG)" in line
