"""The model at a glance, logged when a run starts: its layers, the shape each one outputs for a batch, and its
parameters, per layer and in total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from trainer.observe.text_table import aligned

CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass
class LayerRow:
    name: str
    kind: str
    """The module's class name."""
    output_shape: Optional[tuple[int, ...]]
    """For a batch of B samples, with B shown as the first size; None when the layer was not called as a module
    (e.g. an attention's output projection, whose weights the attention uses directly)."""
    parameters: int


def layer_rows(model: nn.Module, sample: torch.Tensor) -> list[LayerRow]:
    """The model's top-level layers (the items of a Sequential or ModuleList are layers of their own) and the
    output shape of each for `sample`, a batch (B, *input_shape) run through the model in eval mode."""
    layers = []
    for name, child in model.named_children():
        items = child.named_children() if isinstance(child, CONTAINERS) else ()
        layers += [(f"{name}.{item}", module) for item, module in items] or [(name, child)]
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(sample)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    rows = [LayerRow(name, type(module).__name__, shapes.get(name), _count(module.parameters()))
            for name, module in layers]
    own = _count(model.parameters(recurse=False))  # e.g. a position embedding held by the model itself
    if own:
        rows.insert(0, LayerRow("(own)", "Parameter", None, own))
    return rows


def summary_table(model: nn.Module, sample: torch.Tensor) -> str:
    """A table of `layer_rows`, with the totals."""
    rows = layer_rows(model, sample)
    shown = [(row.name, row.kind, _shape(row.output_shape), f"{row.parameters:,}") for row in rows]
    lines = aligned([("layer", "type", "output shape", "parameters"), *shown], right={3})
    total = _count(model.parameters())
    trainable = _count(p for p in model.parameters() if p.requires_grad)
    megabytes = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {megabytes:.2f} MB; input "
                 f"{_shape(tuple(sample.shape))}")
    return "\n".join(lines)


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def _shape(shape: Optional[tuple[int, ...]]) -> str:
    """(B, 10) for a batch of any size B; '-' when unknown."""
    return "-" if shape is None else "(" + ", ".join(["B", *map(str, shape[1:])]) + ")"
