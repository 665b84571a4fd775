"""An image folder's listing (data.image_listing): which files and classes it takes, from the file system's
metadata alone. (test_image_folder.py: the folder as a whole.)"""

from __future__ import annotations

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
