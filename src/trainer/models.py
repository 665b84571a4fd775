"""The models a config can pick. Each takes `input_shape` and `num_outputs` from the data, so sizes are never
typed twice; every other argument is a config key (`model.hidden_sizes=[256,128]`)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from trainer.config import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORMS = {"none": None, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}


class HiddenLayer(nn.Module):
    """Linear -> optional norm -> activation -> optional dropout; with `residual`, the input is added back."""

    def __init__(self, in_features: int, out_features: int, activation: str, norm: str, dropout: float,
                 residual: bool):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = NORMS[norm](out_features) if NORMS[norm] else nn.Identity()
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # A skip connection needs equal widths; layers that change width stay plain.
        self.residual = residual and in_features == out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        h = self.dropout(self.activation(self.norm(self.linear(x))))
        return x + h if self.residual else h


class MLP(nn.Module):
    """A multi-layer perceptron: flatten the input, hidden layers, a linear head that outputs logits or values."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, hidden_sizes: Sequence[int] = (256, 128),
                 activation: str = "relu", norm: str = "none", residual: bool = False, init: str = "default",
                 dropout: float = 0.0):
        super().__init__()
        widths = [math.prod(input_shape), *hidden_sizes]
        self.hidden = nn.Sequential(*(
            HiddenLayer(w_in, w_out, activation, norm, dropout, residual) for w_in, w_out in zip(widths, widths[1:])
        ))
        self.head = nn.Linear(widths[-1], num_outputs)
        _initialise(self, init, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> (B, num_outputs)
        return self.head(self.hidden(x.flatten(1)))


class DropoutNet(MLP):
    """The MLP with dropout after each hidden activation: in training each activation is zeroed with probability
    `dropout` (the rest scaled by 1/(1-p)), which keeps units from co-adapting; evaluation uses them all."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int, hidden_sizes: Sequence[int] = (512, 256),
                 dropout: float = 0.3, **mlp_options):
        super().__init__(input_shape, num_outputs, hidden_sizes=hidden_sizes, dropout=dropout, **mlp_options)


def _initialise(model: nn.Module, init: str, activation: str) -> None:
    """He (Kaiming) init suits ReLU-like units, Xavier (Glorot) suits tanh and sigmoid; `default` keeps torch's."""
    if init == "default":
        return
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if init == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                gain = nn.init.calculate_gain(activation) if activation in ("tanh", "sigmoid", "relu") else 1.0
                nn.init.xavier_uniform_(module.weight, gain=gain)
            nn.init.zeros_(module.bias)


class TransformerBlock(nn.Module):
    """The classic encoder block (Vaswani et al., 2017): self-attention and a feed-forward net, each wrapped in a
    residual connection and LayerNorm. Post-norm as in the paper; `norm_first` is the pre-norm variant that trains
    more stably when deep."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0,
                 norm_first: bool = False):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model),
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        if self.norm_first:
            x = x + self._attend(self.norm1(x))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self._attend(x))
        return self.norm2(x + self.dropout(self.feed_forward(x)))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)  # every token attends to every token
        return self.dropout(attended)


class Transformer(nn.Module):
    """A classifier or regressor around a stack of TransformerBlocks.

    Tokens: an image (C, H, W) becomes H tokens, one per row of C*W pixels, or with `patch_size` p, (H/p)*(W/p)
    tokens, one per p x p patch of C*p*p pixels (as in the Vision Transformer); a feature vector (F,) becomes F
    tokens of one value each. Each token is embedded linearly, a learned position embedding is added, the blocks
    mix the tokens, and their mean feeds a linear head.
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1, norm_first: bool = False,
                 patch_size: Optional[int] = None):
        super().__init__()
        self.patch_size = patch_size
        if len(input_shape) == 3 and patch_size:
            channels, height, width = input_shape
            if height % patch_size or width % patch_size:
                raise ConfigError("model.patch_size", patch_size,
                                  f"a divisor of both the height and the width of the {height}x{width} images")
            num_tokens, token_size = (height // patch_size) * (width // patch_size), channels * patch_size ** 2
        elif len(input_shape) == 3:
            channels, rows, width = input_shape
            num_tokens, token_size = rows, channels * width
        else:
            num_tokens, token_size = math.prod(input_shape), 1
        self.embed = nn.Linear(token_size, d_model)
        self.position = nn.Parameter(torch.randn(1, num_tokens, d_model) * 0.02)
        self.blocks = nn.Sequential(*(
            TransformerBlock(d_model, num_heads, dim_feedforward, dropout, norm_first) for _ in range(num_layers)
        ))
        # Pre-norm blocks leave the residual stream un-normalised, so one LayerNorm closes the stack.
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, num_outputs)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H, C*W) rows, or (B, H/p * W/p, C*p*p) patches, as tokens; (B, F) -> (B, F, 1)."""
        if x.dim() == 4 and self.patch_size:
            p = self.patch_size
            batch, channels = x.shape[:2]
            patches = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
            return patches.permute(0, 2, 3, 1, 4, 5).reshape(batch, -1, channels * p * p)
        if x.dim() == 4:
            batch, channels, rows, width = x.shape
            return x.permute(0, 2, 1, 3).reshape(batch, rows, channels * width)
        return x.flatten(1).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> (B, num_outputs)
        h = self.embed(self.tokens(x)) + self.position  # (B, T, d_model)
        h = self.final_norm(self.blocks(h))
        return self.head(h.mean(dim=1))


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
