"""One image file as a model's input: uint8 pixels (C, H, W) in the channels and size it was trained at.

Training (image_cache, for data=image_folder) and `predict` read images with these same functions, so a picture
given to `predict` is converted and resized exactly as the training pictures were: turned upright as its EXIF
orientation says (a photo a phone took sideways), 16-bit grey scaled to 8 bits, PIL's grey ("L", ITU-R 601-2
luma) or "RGB" conversion, then PIL's bilinear resize (antialiased when it shrinks). An image is read as a stranger
may have written it: one of more pixels than PIL allows (a decompression bomb), or one that fails to decode, is an
UnreadableImage naming the file, before it costs memory.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_MODES = {1: "L", 3: "RGB"}
"""PIL's mode for images of that many channels: grey, colour."""
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""PIL's modes of images without colour (1-bit, 8-bit, 16-bit, 32-bit grey, with or without alpha)."""
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
"""PIL's modes of 16-bit grey images (a 16-bit grey PNG is I;16, or I, 32 bits, in older PILs)."""
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
"""What PIL raises for a file that is not an image (UnidentifiedImageError, an OSError), a truncated one, or a
damaged one (its plugins raise each of these)."""


class UnreadableImage(Exception):
    """A file that is not an image PIL can decode, is truncated or damaged, or has more pixels than PIL allows."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, " ".join(reason.split())  # one line, whatever PIL said
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, without decoding its pixels."""

    height: int
    width: int
    grey: bool
    """No colour channels (PIL's GREY_MODES); a palette image counts as colour."""


def image_header(path: Path) -> ImageHeader:
    """The size (upright) and colour of the image in `path`, from its header alone. Not thread-safe (it catches
    PIL's decompression bomb warning as an error): call it from one thread."""
    from PIL import Image  # torchvision's dependency

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if _orientation(image) in (5, 6, 7, 8):  # turned a quarter: upright, its width is its stored height
                    width, height = height, width
                return ImageHeader(height=height, width=width, grey=image.mode in GREY_MODES)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb(path, str(error)) from None
    except DECODE_ERRORS as error:
        raise UnreadableImage(path, _said(error)) from None


def read_pixels(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    """The image in `path` as uint8 (channels, height, width): upright, converted to grey (1) or RGB (3), and
    resized (bilinear) when it has another size. An image of more pixels than PIL's limit is refused, whether PIL
    itself would refuse it or only warn (checked here from the size before decoding, so that threads may call
    this)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = image.size[0] * image.size[1]
            if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
                raise _bomb(path, f"Image size ({pixels} pixels) exceeds limit of {Image.MAX_IMAGE_PIXELS} pixels")
            orientation = _orientation(image)
            image = _eight_bit(image, path).convert(IMAGE_MODES[channels])
            image = _upright(image, orientation)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image)  # (H, W) grey or (H, W, 3) colour
    except Image.DecompressionBombError as error:
        raise _bomb(path, str(error)) from None
    except DECODE_ERRORS as error:
        raise UnreadableImage(path, _said(error)) from None
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


def _orientation(image) -> int:
    """The EXIF orientation of `image` (1: stored upright; 2 to 8: flipped or turned, as a phone's camera stores a
    photo taken sideways; 5 to 8 turned a quarter), read from its header: a PNG's eXIf chunk only where it comes
    before the pixels, as PIL would decode the whole image to look for one after them. The header pass and the
    decoding read it alike, so that both see the same size. EXIF that cannot be read counts as upright."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return image.getexif().get(0x0112, 1)  # the Orientation tag
    except DECODE_ERRORS:
        return 1


def _upright(image, orientation: int):
    """`image` turned or flipped upright from its EXIF `orientation`, as PIL.ImageOps.exif_transpose turns it
    (which reads the orientation itself, and of a PNG after decoding it: see _orientation)."""
    from PIL import Image

    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return image if method is None else image.transpose(method)


def _eight_bit(image, path: Path):
    """`image`, its 16-bit grey values scaled to 8 bits (value >> 8: 65535 is 255), where PIL's own conversion
    clips them, leaving all but the darkest pictures (scans, microscopy, depth maps) white. A 32-bit image of
    values beyond 16 bits, or a floating-point one, has no range to scale from: refused."""
    from PIL import Image

    if image.mode == "F":
        raise UnreadableImage(path, "a floating-point grey image (PIL mode F), whose values have no 8-bit scale")
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image)  # (H, W) uint16 or int32
    if values.min() < 0 or values.max() > 65535:
        raise UnreadableImage(path, f"a 32-bit grey image of values {values.min()} to {values.max()}, beyond 16 "
                                    f"bits' 0 to 65535, which have no 8-bit scale")
    return Image.fromarray((values >> 8).astype(np.uint8))


def _said(error: Exception) -> str:
    """Why a file could not be read: the OS's words for an error of the OS (a link that leads nowhere: "No such file
    or directory"), without the path that UnreadableImage names already; PIL's own message otherwise."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _bomb(path: Path, said: str) -> UnreadableImage:
    """A decompression bomb, as PIL's `said` describes it: a small file that decodes to gigabytes looks like that."""
    from PIL import Image

    return UnreadableImage(path, f"at most {Image.MAX_IMAGE_PIXELS} pixels: {said}")
