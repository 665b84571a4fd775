"""The Transformer (model=transformer): encoder blocks over rows, patches or features as tokens."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from trainer.config import ConfigError


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
