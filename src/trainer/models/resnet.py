"""The residual CNN (model=resnet) of the CIFAR-10 tutorials."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainer.config import ConfigError


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, and the input added back before the last ReLU (He et al., 2016).
    When the block halves the resolution or changes the width, a strided 1x1 convolution reshapes the input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class ResNet(nn.Module):
    """A small residual CNN for images (the CIFAR-10 network of the tutorials): a 3x3 stem, then one stage of
    `blocks_per_stage` ResidualBlocks per entry of `channels`, each stage after the first halving the resolution,
    then global average pooling and a linear head. channels (32, 64, 128) on 3x32x32: 8x8 maps at the end."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 2):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError("model", "ResNet", f"image data of shape (C, H, W); this set's samples have shape "
                                                 f"{tuple(input_shape)}: use model=mlp or model=transformer")
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], channels[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())
        blocks, width = [], channels[0]
        for stage, out_channels in enumerate(channels):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(ResidualBlock(width, out_channels, stride))
                width = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_outputs)
        h = self.blocks(self.stem(x))  # (B, channels[-1], H / 2^(stages-1), W / 2^(stages-1))
        return self.head(h.mean(dim=(2, 3)))
