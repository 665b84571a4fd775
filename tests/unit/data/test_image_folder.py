"""data=image_folder: the folder's layout, classes and splits, sizes, channels, file formats, damaged images, the
augmentation it chooses, and the memory-mapped set served without a copy. (test_image_cache.py: the cache;
tests/e2e/test_train_image_folder.py: `train` and `predict` on a folder.)"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import IMAGE_CLASSES, compose_config, write_image_folder
from trainer.config import ConfigError, validate
from trainer.data import build_data, transforms
from trainer.data.batcher import RowsOf
from trainer.data.image_files import read_pixels
from trainer.data.image_folder import image_folder
from trainer.data.transforms import Normalize

CLASSES = sorted(IMAGE_CLASSES)


def load(folder: Path, tmp_path: Path, **settings):
    return image_folder(str(folder), cache_dir=str(tmp_path / "cache"), **settings)


def built(folder: Path, tmp_path: Path, *overrides: str):
    return build_data(compose_config("data=image_folder", f"data.path={folder}",
                                     f"data.cache_dir={tmp_path / 'cache'}", *overrides).data)


def split_folder(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """root/train|val|test/<class>/<image>: 20 images per class in train/, 5 in the others."""
    for number, split in enumerate(splits):
        write_image_folder(root / split, per_class=20 if split == "train" else 5, seed=number)
    return root


def message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --- layout, classes and splits ---------------------------------------------------------------------------------

def test_a_flat_folder_gives_its_class_folders_sorted_as_classes_and_a_read_only_memory_map(tmp_path):
    arrays = load(write_image_folder(tmp_path / "images", per_class=10), tmp_path)
    assert isinstance(arrays.x, np.memmap) and arrays.x.mode == "r"
    assert arrays.x.shape == (30, 3, 8, 8) and arrays.x.dtype == np.uint8
    assert arrays.class_names == CLASSES
    assert arrays.y.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert arrays.val is None and arrays.test is None
    # Each row is its file, decoded: blue/000.png first.
    expected = np.asarray(Image.open(tmp_path / "images" / "blue" / "000.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(arrays.x[0], expected)


def test_a_flat_folder_is_split_at_random_with_the_shared_fractions(tmp_path):
    data = built(write_image_folder(tmp_path / "images", per_class=20), tmp_path)
    assert [len(part[0]) for part in (data.train, data.val, data.test)] == [42, 6, 12]
    assert data.description.class_names == CLASSES and data.description.input_shape == (3, 8, 8)
    for _, labels in (data.train, data.val, data.test):  # stratified: every class in every split
        assert set(labels.tolist()) == {0, 1, 2}


def test_train_val_and_test_folders_are_the_splits(tmp_path):
    data = built(split_folder(tmp_path / "images"), tmp_path)
    assert [len(part[0]) for part in (data.train, data.val, data.test)] == [60, 15, 15]
    test_image = np.array(Image.open(tmp_path / "images" / "test" / "blue" / "000.png")).transpose(2, 0, 1)
    assert torch.equal(data.test[0][0], torch.from_numpy(test_image))


def test_without_a_val_folder_validation_is_held_out_of_train(tmp_path):
    data = built(split_folder(tmp_path / "images", ("train", "test")), tmp_path)
    assert [len(part[0]) for part in (data.train, data.val, data.test)] == [54, 6, 15]


@pytest.mark.parametrize("overrides, expected", [
    (("data.test_fraction=0.3",), "data.test_fraction: got 0.3, expected null: this set has its own test split, "
                                  "and that is what the test uses"),
    (("data.val_fraction=0.2",), "data.val_fraction: got 0.2, expected null: this set has its own validation "
                                 "split, and that is what the validation uses"),
])
def test_a_fraction_for_a_split_the_folder_has_is_refused(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as error:
        built(split_folder(tmp_path / "images"), tmp_path, *overrides)
    assert message(error) == expected


def test_null_for_a_split_the_folder_lacks_is_refused(tmp_path):
    with pytest.raises(ConfigError) as error:
        built(write_image_folder(tmp_path / "images", per_class=10), tmp_path, "data.test_fraction=null")
    assert message(error) == "data.test_fraction: got None, expected a number in (0, 1): this set has no test split " \
                             "of its own"


def test_numbers_split_a_flat_folder_as_they_split_a_table(tmp_path):
    data = built(write_image_folder(tmp_path / "images", per_class=20), tmp_path, "data.val_fraction=0.25",
                 "data.test_fraction=0.25")
    assert [len(part[0]) for part in (data.train, data.val, data.test)] == [30, 15, 15]


def one_class(root: Path) -> None:
    write_image_folder(root, per_class=3)
    shutil.rmtree(root / "red")
    shutil.rmtree(root / "green")


def stray_folder_beside_train(root: Path) -> None:
    split_folder(root, ("train",))
    (root / "valid").mkdir()


def empty_split(root: Path) -> None:
    split_folder(root, ("train",))
    (root / "test" / "red").mkdir(parents=True)


@pytest.mark.parametrize("make, expected", [
    (Path.mkdir, "(it holds no images)"),
    (one_class, "in at least 2 class folders (its images are all of the class 'blue')"),
    (stray_folder_beside_train, "(it has train/, and valid/ beside it)"),
    (empty_split, "(test/ holds no images)"),
], ids=["empty", "one-class", "stray-folder-beside-train", "empty-split"])
def test_a_folder_that_is_not_a_set_of_classes_is_one_line_naming_it(tmp_path, make, expected):
    root = tmp_path / "images"
    make(root)
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path)
    assert message(error).startswith(f"data.path: got '{root}', expected a folder of class folders holding images")
    assert message(error).endswith(expected)


def test_hidden_files_and_other_files_are_left_alone(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "red" / ".hidden.png").write_bytes(b"junk")
    (root / ".git").mkdir()
    assert len(load(root, tmp_path).x) == 12


# --- sizes, channels, formats ---------------------------------------------------------------------------------

def test_images_of_different_sizes_are_refused_in_one_line_naming_two_and_the_way_out(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=3)
    write_image_folder(tmp_path / "other", per_class=1, size=(10, 12))
    shutil.copy(tmp_path / "other" / "red" / "000.png", root / "red" / "099.png")
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path)
    assert message(error) == (f"data.image_size: got None, expected [H,W] to resize every image to, e.g. "
                              f"data.image_size=[8,8]: the images differ in size ({root}/blue/000.png is 8x8, "
                              f"{root}/red/099.png is 10x12, as HxW)")
    resized = load(root, tmp_path, image_size=[6, 5])
    assert resized.x.shape == (10, 3, 6, 5)
    np.testing.assert_array_equal(resized.x[-1], read_pixels(root / "red" / "099.png", 3, 6, 5))
    assert load(root, tmp_path, image_size=7).x.shape == (10, 3, 7, 7)


@pytest.mark.parametrize("grey, channels, expected", [
    (True, "auto", 1), (False, "auto", 3), (True, 3, 3), (False, 1, 1)])
def test_channels(tmp_path, grey, channels, expected):
    root = write_image_folder(tmp_path / "images", per_class=3, grey=grey)
    arrays = load(root, tmp_path, channels=channels)
    assert arrays.x.shape[1] == expected
    first = Image.open(root / "blue" / "000.png").convert("L" if expected == 1 else "RGB")
    np.testing.assert_array_equal(arrays.x[0], np.asarray(first).reshape(8, 8, expected).transpose(2, 0, 1))


def test_one_colour_image_among_grey_ones_makes_the_set_colour(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=3, grey=True)
    write_image_folder(tmp_path / "colour", per_class=1)
    shutil.copy(tmp_path / "colour" / "red" / "000.png", root / "red" / "099.png")
    arrays = load(root, tmp_path)
    assert arrays.x.shape[1] == 3
    assert (arrays.x[0, 0] == arrays.x[0, 1]).all()  # a grey image as RGB: three equal channels


@pytest.mark.parametrize("image_format", ["JPEG", "BMP", "WEBP"])
def test_jpeg_bmp_and_webp_are_read(tmp_path, image_format):
    root = write_image_folder(tmp_path / "images", per_class=3, image_format=image_format)
    arrays = load(root, tmp_path)
    assert arrays.x.shape == (9, 3, 8, 8)
    first = min((root / "blue").iterdir())
    np.testing.assert_array_equal(arrays.x[0], np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1))


# --- damaged images ---------------------------------------------------------------------------------------------

def damage(root: Path) -> list[Path]:
    """Two unreadable images: one that is not an image at all, one PNG cut in half (its header reads)."""
    (root / "green" / "000.png").write_text("not an image")
    whole = (root / "red" / "001.png").read_bytes()
    (root / "red" / "001.png").write_bytes(whole[:len(whole) // 2])
    return [root / "green" / "000.png", root / "red" / "001.png"]


def test_an_unreadable_image_is_one_line_naming_it(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=3)
    not_an_image, _ = damage(root)
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path)
    assert message(error).startswith(f"data.path: got '{not_an_image}', expected a PNG, JPEG, BMP or WebP image "
                                     f"that can be read (cannot identify image file")
    assert message(error).endswith("remove it, or set data.skip_damaged=true to leave out the images that cannot "
                                   "be read")


def test_an_image_that_fails_to_decode_is_one_line_naming_it(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=3)
    whole = (root / "red" / "001.png").read_bytes()
    (root / "red" / "001.png").write_bytes(whole[:len(whole) // 2])  # the header reads; the pixels do not
    with pytest.raises(ConfigError) as error:
        load(root, tmp_path)
    assert message(error).startswith(f"data.path: got '{root}/red/001.png', expected a PNG, JPEG, BMP or WebP image "
                                     f"that can be read (image file is truncated")


def test_skip_damaged_leaves_them_out_with_one_warning_that_counts_them(tmp_path, caplog):
    root = write_image_folder(tmp_path / "images", per_class=3)
    damage(root)
    with caplog.at_level(logging.WARNING):
        arrays = load(root, tmp_path, skip_damaged=True)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["data.skip_damaged: left out 2 images that cannot be read: green/000.png, red/001.png"]
    assert arrays.y.tolist() == [0, 0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(arrays.x[-1], read_pixels(root / "red" / "002.png", 3, 8, 8))


# --- augmentation -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grey, overrides, expected", [
    (False, (), transforms.Augment(crop_padding=1, horizontal_flip=True)),  # an eighth of 8 pixels
    (True, (), None),
    (True, ("data.augment={crop_padding:2,horizontal_flip:false}",), transforms.Augment(2, False)),
])
def test_augment_auto_is_cifar_s_for_colour_and_none_for_grey(tmp_path, grey, overrides, expected):
    root = write_image_folder(tmp_path / "images", per_class=10, grey=grey)
    assert built(root, tmp_path, *overrides).augment == expected


# --- served from the memory map ---------------------------------------------------------------------------------

def test_the_dataloader_pipeline_keeps_rows_of_the_map_and_the_device_pipeline_copies_them(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=20)
    device = built(root, tmp_path)
    loader = built(root, tmp_path, "data.pipeline=dataloader")
    for name in ("train", "val", "test"):
        rows, copied = getattr(loader, name)[0], getattr(device, name)[0]
        assert isinstance(rows, RowsOf) and isinstance(rows.array, np.memmap) and isinstance(copied, torch.Tensor)
        assert torch.equal(rows.read(np.arange(len(rows))), copied)
        assert torch.equal(getattr(loader, name)[1], getattr(device, name)[1])
    assert torch.equal(loader.description.pixels.mean, device.description.pixels.mean)
    assert torch.equal(loader.description.pixels.std, device.description.pixels.std)


def test_normalize_fits_a_memory_mapped_set_in_chunks_exactly(tmp_path, monkeypatch):
    arrays = load(write_image_folder(tmp_path / "images", per_class=20), tmp_path)
    whole = Normalize.fitted(torch.from_numpy(np.array(arrays.x)))
    monkeypatch.setattr(transforms, "CHUNK_BYTES", 7 * 3 * 8 * 8)  # 7 rows at a time
    rows = RowsOf(arrays.x, np.arange(len(arrays.x)))
    read = []
    monkeypatch.setattr(RowsOf, "read", lambda self, index, read_rows=RowsOf.read: read.append(len(index))
                        or read_rows(self, index))
    chunked = Normalize.fitted(rows)
    assert read == [7] * 8 + [4]
    assert torch.equal(chunked.mean, whole.mean) and torch.equal(chunked.std, whole.std)


# --- the command line's checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("data.channels=2", "data.channels: got 2, expected auto, 1 or 3"),
    ("data.image_size=[0,4]", "data.image_size: got [0, 4], expected null (the images' own size), an integer >= 1, "
                              "or [H,W], e.g. [32,32]"),
    ("data.skip_damaged=maybe", "data.skip_damaged: got 'maybe', expected true or false"),
    ("data.test_fraction=1.5", "data.test_fraction: got 1.5, expected auto, a number in (0, 1), or null"),
    ("data.augment=sometimes", "data.augment: got 'sometimes', expected auto, or {crop_padding: N, "
                               "horizontal_flip: true|false}, or null"),
])
def test_validate_refuses_bad_settings_before_anything_is_read(override, expected):
    with pytest.raises(ConfigError) as error:
        validate(compose_config("data=image_folder", override))
    assert message(error) == expected


def test_validate_wants_a_folder_for_data_path(tmp_path):
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ConfigError) as error:
        validate(compose_config("data=image_folder", f"data.path={tmp_path / 'file.png'}"))
    assert message(error) == f"data.path: got '{tmp_path / 'file.png'}', expected the path of a folder that exists"
