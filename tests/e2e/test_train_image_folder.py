"""`train data=image_folder data.path=DIR` and `predict` from its run, as a user runs them: a folder of generated
images of different colours is learnt; the cache is written once and reused; the folder's split folders, mixed
sizes, damaged images, a read-only data folder and an unwritable cache folder; the dataloader pipeline over the
memory-mapped cache trains as the device pipeline does. (tests/unit/data/test_image_folder.py and
test_image_cache.py: the loader and the cache.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable
from subprocess import CompletedProcess

import pytest
from PIL import Image

from conftest import IMAGE_CLASSES, metrics_rows, write_image_folder
from helpers.commands import assert_succeeded
from helpers.files import read_only
from helpers.trained_runs import best_checkpoint


@pytest.fixture
def cache_home(tmp_path) -> Path:
    """XDG_CACHE_HOME of the test's commands: where the decoded images go by default."""
    return tmp_path / "xdg-cache"


@pytest.fixture
def train(train_in_this_process, monkeypatch) -> Callable[..., CompletedProcess]:
    """`train data=image_folder ARGS` with XDG_CACHE_HOME=cache_home, run in this process (the seconds of a new
    process's start-up are not what these tests are about; tests/e2e/test_image_cache_processes.py runs several)."""
    def run(cache_home: Path, *args: str, cwd: Path) -> CompletedProcess:
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
        return train_in_this_process("data=image_folder", "model.hidden_sizes=[32]", *args, cwd=cwd)
    return run


def one_line_error(result: CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_a_run_learns_the_colours_and_a_second_run_reuses_the_decoded_images(tmp_path, elsewhere, cache_home, train):
    folder = write_image_folder(tmp_path / "images", per_class=30)
    first = train(cache_home, f"data.path={folder}", "trainer.max_epochs=5", f"hydra.run.dir={tmp_path / 'run1'}",
                  cwd=elsewhere)
    assert_succeeded(first)
    log = (tmp_path / "run1" / "train.log").read_text()
    assert "written: 90 images of 3x8x8" in log
    assert "multiclass: 63 samples to train, 9 to validate, 18 to test" in log
    assert json.loads((tmp_path / "run1" / "summary.json").read_text())["test"]["accuracy"] > 0.6  # chance: 1/3
    assert [path.name for path in (cache_home / "trainer" / "image_folder").iterdir()] != []

    second = train(cache_home, f"data.path={folder}", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run2'}",
                   cwd=elsewhere)
    assert_succeeded(second)
    assert "reused: 90 images" in (tmp_path / "run2" / "train.log").read_text()


def test_train_val_and_test_folders_are_the_run_s_splits(tmp_path, elsewhere, cache_home, train):
    for number, (split, per_class) in enumerate([("train", 20), ("val", 4), ("test", 6)]):
        write_image_folder(tmp_path / "images" / split, per_class=per_class, seed=number)
    result = train(cache_home, f"data.path={tmp_path / 'images'}", "trainer.max_epochs=1",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=elsewhere)
    assert_succeeded(result)
    assert "multiclass: 60 samples to train, 12 to validate, 18 to test" in (tmp_path / "run" / "train.log").read_text()


def test_mixed_sizes_are_one_line_then_resized_with_image_size_and_predict_resizes_as_training_did(
        tmp_path, elsewhere, cache_home, train, train_in_this_process):
    folder = write_image_folder(tmp_path / "images", per_class=30, size=(12, 10))
    write_image_folder(tmp_path / "small", per_class=1, size=(8, 8))
    shutil.copy(tmp_path / "small" / "red" / "000.png", folder / "red" / "zzz.png")
    run_dir = tmp_path / "run"
    refused = one_line_error(train(cache_home, f"data.path={folder}", f"hydra.run.dir={run_dir}", cwd=elsewhere))
    assert refused == (f"train: error: data.image_size: got None, expected [H,W] to resize every image to, e.g. "
                       f"data.image_size=[12,10]: the images differ in size ({folder}/blue/000.png is 12x10, "
                       f"{folder}/red/zzz.png is 8x8, as HxW)")
    assert not run_dir.exists()

    assert_succeeded(train(cache_home, f"data.path={folder}", "data.image_size=[8,8]", "trainer.max_epochs=5",
                           f"hydra.run.dir={run_dir}", cwd=elsewhere))
    inputs = tmp_path / "new"
    inputs.mkdir()
    for (name, colour), suffix in zip(IMAGE_CLASSES.items(), ("bmp", "webp", "png")):
        Image.new("RGB", (31, 17), colour).save(inputs / f"{name}.{suffix}")  # another size, resized to 8x8
    Image.new("L", (9, 9), 120).convert("L").save(inputs / "grey.jpg")  # grey, converted to the run's 3 channels
    for source in (inputs, inputs / "red.png"):
        result = train_in_this_process(f"ckpt_path={best_checkpoint(run_dir)}", f"input={source}", "device=cpu",
                                       cwd=elsewhere, command="predict")
        assert_succeeded(result)
        predicted = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if "(" in line}
        assert predicted["red.png"] == "red", result.stdout
        if source == inputs:
            assert predicted["blue.bmp"] == "blue" and predicted["green.webp"] == "green", result.stdout
            assert "grey.jpg" in predicted


def test_a_damaged_image_is_one_line_naming_it_and_skip_damaged_leaves_it_out_with_a_warning(tmp_path, elsewhere,
                                                                                            cache_home, train):
    folder = write_image_folder(tmp_path / "images", per_class=10)
    (folder / "green" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    refused = one_line_error(train(cache_home, f"data.path={folder}", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=elsewhere))
    assert refused.startswith(f"train: error: data.path: got '{folder}/green/003.png', expected a PNG, JPEG, BMP or "
                              f"WebP image that can be read (")
    skipped = train(cache_home, f"data.path={folder}", "data.skip_damaged=true", "trainer.max_epochs=1",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=elsewhere)
    assert_succeeded(skipped)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "data.skip_damaged: left out 1 image that cannot be read: green/003.png" in log
    assert "written: 29 images" in log


def test_a_read_only_data_folder_trains_with_the_cache_in_the_user_s_cache_directory(tmp_path, elsewhere,
                                                                                     cache_home, train):
    folder = write_image_folder(tmp_path / "images", per_class=10)
    contents = sorted(path.relative_to(folder) for path in folder.rglob("*"))
    with read_only(folder) as view:
        with pytest.raises(OSError):  # it is read-only, for this process as for train
            (view / "written").write_text("")
        result = train(cache_home, f"data.path={view}", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
                       cwd=elsewhere)
    assert_succeeded(result)
    assert sorted(path.relative_to(folder) for path in folder.rglob("*")) == contents
    assert f"image cache {cache_home}/trainer/image_folder/" in (tmp_path / "run" / "train.log").read_text()


def test_an_unwritable_cache_dir_is_one_line_naming_data_cache_dir(tmp_path, elsewhere, cache_home, train):
    folder = write_image_folder(tmp_path / "images", per_class=5)
    (tmp_path / "a-file").write_text("")
    refused = one_line_error(train(cache_home, f"data.path={folder}", f"data.cache_dir={tmp_path / 'a-file'}",
                                   f"hydra.run.dir={tmp_path / 'run'}", cwd=elsewhere))
    assert refused.startswith(f"train: error: data.cache_dir: got '{tmp_path / 'a-file'}', expected a folder this "
                              f"process can write the decoded images to (")
    assert not (tmp_path / "run").exists()


def test_the_dataloader_pipeline_over_the_memory_map_trains_as_the_device_pipeline(tmp_path, elsewhere, cache_home,
                                                                                   train):
    folder = write_image_folder(tmp_path / "images", per_class=20)
    for pipeline in ("device", "dataloader"):
        assert_succeeded(train(cache_home, f"data.path={folder}", f"data.pipeline={pipeline}", "data.num_workers=1",
                               "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / pipeline}", cwd=elsewhere))
    assert metrics_rows(tmp_path / "dataloader") == metrics_rows(tmp_path / "device")
    assert "reused: 60 images" in (tmp_path / "dataloader" / "train.log").read_text()
