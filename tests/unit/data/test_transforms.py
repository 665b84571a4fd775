import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.data.transforms import Augment, Normalize, random_crop


def uint8_images(n=16, channels=3, height=6, width=7, seed=0) -> torch.Tensor:
    """Random pixels in 1..255, with channels of different brightness, so per-channel statistics differ."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, channels, height, width), generator=generator)
    return (images // (torch.arange(channels) + 1)[:, None, None]).clamp(min=1).to(torch.uint8)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def crop_offset(output: torch.Tensor, image: torch.Tensor, padding: int) -> tuple[int, int] | None:
    """The (top, left) at which `output` is a window of `image` zero-padded by `padding`; None if there is none."""
    padded = F.pad(image, (padding, padding, padding, padding))
    height, width = image.shape[-2:]
    for top, left in itertools.product(range(2 * padding + 1), repeat=2):
        if torch.equal(padded[..., top:top + height, left:left + width], output):
            return top, left
    return None


# --- Normalize ------------------------------------------------------------------------------------------------------

def test_fitted_statistics_are_the_per_channel_mean_and_std():
    images = uint8_images(n=20)
    pixels = images.double().transpose(0, 1).reshape(3, -1)
    normalize = Normalize.fitted(images)
    assert normalize.mean.dtype == normalize.std.dtype == torch.float32
    assert torch.allclose(normalize.mean.double(), pixels.mean(dim=1), rtol=1e-6)
    assert torch.allclose(normalize.std.double(), pixels.std(dim=1, unbiased=False), rtol=1e-6)
    assert len(set(normalize.mean.tolist())) == 3


def test_a_constant_channel_gets_a_tiny_std_not_zero():
    normalize = Normalize.fitted(torch.full((4, 1, 3, 3), 7, dtype=torch.uint8))
    assert normalize.mean.tolist() == [7.0]
    assert 0 < normalize.std.item() <= 1e-6
    assert torch.equal(normalize(torch.full((1, 1, 2, 2), 7, dtype=torch.uint8)), torch.zeros(1, 1, 2, 2))


def test_call_gives_float32_standardised_pixels():
    images = uint8_images()
    normalize = Normalize(torch.tensor([10.0, 100.0, 200.0]), torch.tensor([2.0, 50.0, 64.0]))
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = (images.numpy().astype(np.float64) - np.array([10, 100, 200])[:, None, None]) \
        / np.array([2, 50, 64])[:, None, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)  # one multiply-add: float32 rounding


def test_fitted_normalize_gives_the_images_zero_mean_and_unit_std_per_channel():
    images = uint8_images(n=20)
    out = Normalize.fitted(images)(images).double().transpose(0, 1).reshape(3, -1)
    assert torch.allclose(out.mean(dim=1), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(out.std(dim=1, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_unit_range_divides_by_255():
    images = uint8_images()
    normalize = Normalize.unit_range(3)
    assert torch.equal(normalize.mean, torch.zeros(3)) and torch.equal(normalize.std, torch.full((3,), 255.0))
    torch.testing.assert_close(normalize(images), images.float() / 255, rtol=0, atol=1e-7)


# --- random crop ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [1, 3])
def test_random_crop_is_a_window_of_the_zero_padded_image(padding):
    images = uint8_images(n=64)
    out = random_crop(images, padding, generator(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets = [crop_offset(o, image, padding) for o, image in zip(out, images)]
    assert None not in offsets
    # Every offset in [0, 2p] is drawn for the rows and for the columns.
    assert {top for top, _ in offsets} == {left for _, left in offsets} == set(range(2 * padding + 1))


def test_random_crop_repeats_for_the_same_seed_and_not_for_another():
    images = uint8_images(n=32)
    first = random_crop(images, 2, generator(5))
    assert torch.equal(first, random_crop(images, 2, generator(5)))
    assert not torch.equal(first, random_crop(images, 2, generator(6)))


def test_no_crop_padding_and_no_flip_leave_the_images_unchanged():
    images = uint8_images()
    augment = Augment(crop_padding=0)
    assert torch.equal(augment(images, generator(0)), images)
    assert not augment.enabled and not Augment().enabled


@pytest.mark.parametrize("augment", [Augment(crop_padding=1), Augment(horizontal_flip=True)], ids=["crop", "flip"])
def test_either_crop_or_flip_enables_augment(augment):
    assert augment.enabled


# --- horizontal flip ------------------------------------------------------------------------------------------------

def test_horizontal_flip_mirrors_about_half_of_the_images():
    images = uint8_images(n=200)
    out = Augment(horizontal_flip=True)(images, generator(0))
    assert out.dtype == torch.uint8
    flipped = [torch.equal(o, image.flip(-1)) for o, image in zip(out, images)]
    kept = [torch.equal(o, image) for o, image in zip(out, images)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is itself or its mirror (and they differ)
    assert 70 <= sum(flipped) <= 130
    assert torch.equal(out, Augment(horizontal_flip=True)(images, generator(0)))


def test_crop_then_flip_gives_a_window_of_the_image_or_of_its_mirror():
    images = uint8_images(n=32)
    out = Augment(crop_padding=2, horizontal_flip=True)(images, generator(1))
    for o, image in zip(out, images):
        assert crop_offset(o, image, 2) is not None or crop_offset(o.flip(-1), image, 2) is not None
