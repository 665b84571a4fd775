"""One image file as training and `predict` read it (data.image_files): 16-bit grey scaled to 8 bits rather than
clipped, and photos turned upright as their EXIF orientation says, in the header pass's size as in the pixels.
(test_image_folder.py: the folder as a whole.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from trainer.config import ConfigError
from trainer.data.image_files import UnreadableImage, image_header, read_pixels
from trainer.data.image_folder import image_folder

ORIENTATION = 0x0112
"""The EXIF tag."""


def load(folder: Path, tmp_path: Path, **settings):
    return image_folder(str(folder), cache_dir=str(tmp_path / "cache"), **settings)


# --- 16-bit grey ------------------------------------------------------------------------------------------------

def test_16_bit_grey_pngs_are_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    """PIL reads a 16-bit grey PNG as mode I;16, and its own conversion to 8 bits clips every value above 255."""
    root = tmp_path / "images"
    values = {"bright": np.arange(50000, 50064, dtype=np.uint16), "dark": np.arange(3000, 3064, dtype=np.uint16)}
    for name, pixels in values.items():
        (root / name).mkdir(parents=True)
        for n in range(3):
            Image.fromarray(pixels.reshape(8, 8) + n * 256).save(root / name / f"{n}.png")
    assert Image.open(root / "dark" / "0.png").mode == "I;16"
    arrays = load(root, tmp_path)
    assert arrays.x.shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(arrays.x[0, 0], (values["bright"].reshape(8, 8) >> 8).astype(np.uint8))
    np.testing.assert_array_equal(arrays.x[4, 0], ((values["dark"].reshape(8, 8) + 256) >> 8).astype(np.uint8))
    assert np.asarray(arrays.x[3:]).max() < 20 < 190 < np.asarray(arrays.x[:3]).min()


def test_32_bit_grey_of_16_bit_values_is_scaled_and_beyond_them_is_refused(tmp_path):
    """Mode I (32 bits) is how older PILs read a 16-bit grey PNG; PIL opens files by their content, whatever their
    name, and a TIFF (here under a PNG's name) may hold I values beyond 16 bits, or floating-point ones (F)."""
    Image.fromarray(np.full((4, 4), 128 * 257, np.int32)).save(tmp_path / "sixteen.png", "TIFF")
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "wider.png", "TIFF")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.png", "TIFF")
    assert Image.open(tmp_path / "sixteen.png").mode == "I"
    assert (read_pixels(tmp_path / "sixteen.png", 1, 4, 4) == 128).all()
    with pytest.raises(UnreadableImage, match=r"^\S+wider.png: a 32-bit grey image of values 70000 to 70000, beyond "
                                              r"16 bits' 0 to 65535, which have no 8-bit scale$"):
        read_pixels(tmp_path / "wider.png", 1, 4, 4)
    with pytest.raises(UnreadableImage, match=r"^\S+float.png: a floating-point grey image \(PIL mode F\), whose "
                                              r"values have no 8-bit scale$"):
        read_pixels(tmp_path / "float.png", 3, 4, 4)


# --- EXIF orientation -------------------------------------------------------------------------------------------

def photo(path: Path, orientation: int, size: tuple[int, int] = (6, 4), image_format: str = "JPEG") -> Path:
    """An image of `size` (W, H), stored as a camera stores it, with an EXIF orientation tag: a gradient across
    and down, so that every turn and flip gives other pixels."""
    width, height = size
    across, down = np.meshgrid(np.arange(width) * 40, np.arange(height) * 60)
    pixels = np.stack([across, down, np.full((height, width), 90)], axis=2).astype(np.uint8)  # (H, W, 3)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, image_format, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_an_image_is_read_upright_as_its_exif_orientation_says(tmp_path, orientation, image_format):
    path = photo(tmp_path / f"photo.{image_format.lower()}", orientation, image_format=image_format)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # (W, H) swapped for 5 to 8
    header = image_header(path)
    assert (header.width, header.height) == upright.size == ((4, 6) if orientation >= 5 else (6, 4))
    np.testing.assert_array_equal(read_pixels(path, 3, header.height, header.width),
                                  np.asarray(upright).transpose(2, 0, 1))


def test_photos_taken_sideways_share_the_size_of_upright_ones_in_a_folder(tmp_path):
    """A phone stores a portrait photo as a landscape one with orientation 6: upright it is a portrait, of the
    size of the portraits stored as such, and the folder needs no data.image_size."""
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        photo(root / name / "sideways.jpg", 6, size=(6, 4))
        photo(root / name / "upright.jpg", 1, size=(4, 6))
    arrays = load(root, tmp_path)
    assert arrays.x.shape == (4, 3, 6, 4)
    upright = ImageOps.exif_transpose(Image.open(root / "cat" / "sideways.jpg"))
    np.testing.assert_array_equal(arrays.x[0], np.asarray(upright).transpose(2, 0, 1))


def test_an_image_whose_exif_cannot_be_read_is_read_as_stored(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((4, 6, 3), 100, np.uint8)).save(path, exif=b"Exif\x00\x00not a TIFF header")
    assert (image_header(path).height, image_header(path).width) == (4, 6)
    assert read_pixels(path, 3, 4, 6).shape == (3, 4, 6)


def test_a_32_bit_image_beyond_16_bits_in_a_folder_is_one_line_naming_it(tmp_path):
    root = tmp_path / "images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 100, np.uint16)).save(root / name / "0.png")
    Image.fromarray(np.full((4, 4), -1, np.int32)).save(root / "b" / "1.png", "TIFF")
    with pytest.raises(ConfigError, match=r"^data.path: got '\S+/b/1.png', expected a PNG, JPEG, BMP or WebP image "
                                          r"that can be read \(a 32-bit grey image of values -1 to -1, beyond"):
        load(root, tmp_path)
