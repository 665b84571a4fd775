"""Per-batch image transforms, as tensor ops on the training device: uint8 pixels in, float model input out.

Images stay uint8 on the device (a quarter of float32's memory) and become floats one batch at a time. Random
crop and flip act on the whole batch at once, with one random draw per sample from the generator the batcher
seeds for that batch, so an augmented epoch repeats exactly (and resumes exactly) for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # batcher imports this module
    from trainer.data.batcher import RowsOf

CHUNK_BYTES = 64 * 2**20
"""Normalize.fitted reads a set this many bytes of images at a time: a memory-mapped one is never read whole."""


@dataclass
class Normalize:
    """uint8 images (B, C, H, W) -> float32 (x - mean) / std per channel, with mean and std in pixel units."""

    mean: torch.Tensor
    """(C,) per channel."""
    std: torch.Tensor
    """(C,) per channel."""

    @classmethod
    def fitted(cls, images: torch.Tensor | RowsOf) -> Normalize:
        """Mean and standard deviation per channel of uint8 images (N, C, H, W), exact, from a histogram of the
        256 pixel values per channel, counted CHUNK_BYTES of images at a time: no float copy of the set, and of a
        memory-mapped one (RowsOf) no copy at all."""
        values = torch.arange(256, dtype=torch.float64)
        channels = images.shape[1]
        counts = torch.zeros(channels, 256, dtype=torch.float64)  # (C, 256): how many pixels have each value
        rows = max(1, CHUNK_BYTES // max(1, int(np.prod(images.shape[1:]))))
        for start in range(0, len(images), rows):
            chunk = (images[start:start + rows] if isinstance(images, torch.Tensor)
                     else images.read(np.arange(start, min(start + rows, len(images)))))  # (B, C, H, W)
            for channel in range(channels):
                counts[channel] += torch.bincount(chunk[:, channel].flatten(), minlength=256).double()
        means = (counts * values).sum(dim=1) / counts.sum(dim=1)  # (C,)
        variances = (counts * (values - means[:, None]) ** 2).sum(dim=1) / counts.sum(dim=1)  # (C,)
        return cls(means.float(), variances.sqrt().clamp(min=1e-6).float())

    @classmethod
    def unit_range(cls, channels: int) -> Normalize:
        """Pixels scaled to [0, 1], without centring (data.standardize=false)."""
        return cls(torch.zeros(channels), torch.full((channels,), 255.0))

    def to(self, device: torch.device) -> Normalize:
        return Normalize(self.mean.to(device), self.std.to(device))

    def __post_init__(self) -> None:
        # (x - mean) / std as one multiply and one add per pixel: x * scale + shift, both (C, 1, 1).
        self._scale = (1 / self.std)[:, None, None]
        self._shift = -self.mean[:, None, None] * self._scale

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # In place on the fresh float copy; on a CPU this takes half the time of torch.addcmul's broadcast.
        return images.float().mul_(self._scale).add_(self._shift)


@dataclass
class Augment:
    """CIFAR-style augmentation of a training batch: a random crop of the original size from the image padded
    with `crop_padding` zero pixels on each side, then a horizontal flip with probability 1/2."""

    crop_padding: int = 0
    horizontal_flip: bool = False

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.horizontal_flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), any dtype."""
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.horizontal_flip:
            flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5  # (B,)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, H, W) cropped back to H x W at its own random offset in the zero-padded image."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = top[:, None] + torch.arange(height, device=device)  # (B, H): the padded rows each image keeps
    cols = left[:, None] + torch.arange(width, device=device)  # (B, W)
    # One gather by broadcast indices: sample b, channel c, row rows[b, i], column cols[b, j].
    return padded[torch.arange(batch, device=device)[:, None, None, None],
                  torch.arange(channels, device=device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
