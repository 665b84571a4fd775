"""An image folder's listing (data.image_listing): which files and classes it takes, from the file system's
metadata alone. (test_image_folder.py: the folder as a whole.)"""

from __future__ import annotations

import logging
import shutil

import pytest

from conftest import write_image_folder
from trainer.config import ConfigError
from trainer.data.image_folder import image_folder


@pytest.mark.parametrize("splits, where", [
    (("val",), "val/"), (("test",), "test/"), (("val", "test"), "val/ and test/")])
def test_a_class_folder_that_train_lacks_is_one_line_naming_it_and_where_it_is(tmp_path, splits, where):
    """train/{blue,green,red} beside val/Red (a typo): pooled, it would be a class with no training image, which
    every validation sample of it would count as a mistake."""
    root = tmp_path / "images"
    write_image_folder(root / "train", per_class=3)
    for split in splits:
        write_image_folder(root / split, per_class=1)
        (root / split / "red").rename(root / split / "Red")
    with pytest.raises(ConfigError) as error:
        image_folder(str(root), cache_dir=str(tmp_path / "cache"))
    assert str(error.value) == (f"data.path: got '{root}', expected a folder of class folders holding images (PNG, "
                                f"JPEG, BMP or WebP): DIR/<class>/<image>, or DIR/train/<class>/<image> with val/ "
                                f"and test/ beside train/ if you have them (the class 'Red', in {where}, is not in "
                                f"train/: each class needs training images)")


def test_a_link_that_leads_nowhere_is_an_image_that_cannot_be_read(tmp_path, caplog):
    """A link to a file moved away, or one round in a loop (a half-synced folder): one line naming it, or with
    data.skip_damaged left out and counted as a damaged image is; a later run decodes it once it leads somewhere."""
    root = write_image_folder(tmp_path / "images", per_class=3)
    (root / "red" / "gone.png").symlink_to(tmp_path / "moved.png")
    (root / "red" / "loop.png").symlink_to("loop.png")
    with caplog.at_level(logging.WARNING):
        assert len(image_folder(str(root), cache_dir=str(tmp_path / "cache"), skip_damaged=True).x) == 9
    assert caplog.messages[-1] == ("data.skip_damaged: left out 2 images that cannot be read: red/gone.png, "
                                   "red/loop.png")
    with pytest.raises(ConfigError) as error:
        image_folder(str(root), cache_dir=str(tmp_path / "cache"))
    assert str(error.value) == (f"data.path: got '{root}/red/gone.png', expected a PNG, JPEG, BMP or WebP image that "
                                f"can be read (No such file or directory); remove it, or set data.skip_damaged=true "
                                f"to leave out the images that cannot be read")
    shutil.copy(root / "red" / "000.png", tmp_path / "moved.png")
    assert len(image_folder(str(root), cache_dir=str(tmp_path / "cache"), skip_damaged=True).x) == 10
