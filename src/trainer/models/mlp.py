"""The multi-layer perceptron (model=mlp) and its dropout variant (model=dropout)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

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
