"""trainer.inspect=true: one optimisation step on one training batch, shown in full. For every parameter tensor
its values before the step, the gradient backward() left in .grad, and its values after step(); the model's
output and loss on the batch before and after. Small tensors are shown value by value, large ones summarised.

The step is the engine's own train_step, so what is shown is what training does (penalties, clipping, the
optimiser's options included). The forward passes before and after the step draw the same random numbers as
the step's own (the same dropout masks), and leave BatchNorm's running statistics as the step left them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import torch

from trainer.observe.records import writing
from trainer.training.engine import Engine
from trainer.training.losses import targets_for
from trainer.training.seeding import rng_states, set_rng_states

VALUES_SAVED_UP_TO = 10_000
"""inspect.json keeps every value of tensors up to this many elements, and a summary of larger ones."""
VALUES_PRINTED_UP_TO = 24
"""The printout shows every value of tensors up to this many elements, and a summary of larger ones."""


def inspect_one_step(engine: Engine, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Take one optimisation step on the first batch of `batches`; return what it did, as plain values."""
    x, y = next(iter(batches))  # x: (B, *input_shape), y: (B,) classes or (B, T) values
    model = engine.model
    engine.train_model.train()
    rng = rng_states(engine.device)
    output_before, _ = _forward_without_trace(engine, x, y)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    group = engine.optimizer.param_groups[0]
    lr = group["lr"]  # the step's (a schedule may change it after the step)
    set_rng_states(rng, engine.device)
    loss_before = engine.train_step([(x, y)])  # the loss of the step's own forward pass
    set_rng_states(rng, engine.device)
    output_after, loss_after = _forward_without_trace(engine, x, y)
    return {
        "optimizer": type(engine.optimizer).__name__,
        "lr": lr,
        "options": {k: v for k, v in group.items() if k not in ("params", "lr") and _shown_option(v)},
        "batch": {"x": describe_tensor(x), "y": describe_tensor(y)},
        "output_before": describe_tensor(output_before),
        "loss_before": loss_before.item() if loss_before is not None else math.nan,  # nan: a skipped step
        "parameters": {name: {"before": describe_tensor(before[name]), "grad": describe_tensor(p.grad),
                              "after": describe_tensor(p), "update_ratio": _update_ratio(before[name], p)}
                       for name, p in model.named_parameters()},
        "output_after": describe_tensor(output_after),
        "loss_after": loss_after,
    }


def _forward_without_trace(engine: Engine, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The model's output on the batch, in training mode as the step sees it, and the loss; buffers (BatchNorm's
    running statistics) are put back as they were."""
    buffers = [b.clone() for b in engine.model.buffers()]
    with torch.no_grad(), engine.precision.autocast():
        output = engine.train_model(x).float()  # (B, num_outputs)
        loss = engine.criterion(output, targets_for(engine.criterion, y))
    for buffer, saved in zip(engine.model.buffers(), buffers):
        buffer.copy_(saved)
    return output, loss.item()


def _shown_option(value: Any) -> bool:
    """The optimiser's numbers (momentum 0.9, betas (0.9, 0.999)) and the switches that are on."""
    if isinstance(value, bool):
        return value
    return isinstance(value, (int, float, str)) or (isinstance(value, tuple) and all(
        isinstance(v, (int, float)) for v in value))


def _update_ratio(before: torch.Tensor, after: torch.Tensor) -> float:
    """||after - before|| / ||before||: how far the step moved the tensor, relative to its size."""
    return ((after.detach() - before).norm() / before.norm()).item()


def describe_tensor(tensor: torch.Tensor | None) -> dict[str, Any] | None:
    """Shape and summary statistics, and the values themselves when there are at most VALUES_SAVED_UP_TO."""
    if tensor is None:  # a parameter the loss does not depend on has no gradient
        return None
    values = tensor.detach().float().cpu()
    described: dict[str, Any] = {"shape": list(values.shape), "mean": values.mean().item(),
                                 "std": values.std().item() if values.numel() > 1 else 0.0,
                                 "min": values.min().item(), "max": values.max().item(),
                                 "norm": values.norm().item()}
    if values.numel() <= VALUES_SAVED_UP_TO:
        described["values"] = values.tolist()
    return described


def printout(report: dict[str, Any]) -> str:
    """The report as the console shows it."""
    options = "".join(f", {k} {v}" for k, v in report["options"].items())
    x, y = report["batch"]["x"], report["batch"]["y"]
    lines = [f"one step of {report['optimizer']} (lr {report['lr']:g}{options}) on the first training batch",
             f"{'x ' + _shape(x):<14} {_brief(x)}",
             f"{'y ' + _shape(y):<14} {_brief(y)}",
             f"output before  {_brief(report['output_before'])}",
             f"loss before    {report['loss_before']:.6g}", ""]
    for name, parameter in report["parameters"].items():
        lines.append(f"{name} {_shape(parameter['before'])}")
        for part in ("before", "grad", "after"):
            lines.append(f"  {part:<6}  {_brief(parameter[part])}")
        lines.append(f"  update/weight  {parameter['update_ratio']:.3g}")
    change = report["loss_after"] - report["loss_before"]
    lines += ["", f"output after   {_brief(report['output_after'])}",
              f"loss after     {report['loss_after']:.6g}  ({change:+.6g})"]
    return "\n".join(lines)


def save(report: dict[str, Any], path: Path) -> None:
    with writing(path):
        path.write_text(json.dumps(report, indent=1) + "\n")


def _brief(described: dict[str, Any] | None) -> str:
    """Every value of a small tensor; the statistics of a large one."""
    if described is None:
        return "none (the loss does not depend on it)"
    if "values" in described and math.prod(described["shape"]) <= VALUES_PRINTED_UP_TO:
        return format_values(described["values"])
    return "  ".join(f"{k} {described[k]:.4g}" for k in ("mean", "std", "min", "max", "norm"))


def format_values(values: Any) -> str:
    """[[0.123457, -1.5], [2, 3]]: six significant digits."""
    if isinstance(values, list):
        return "[" + ", ".join(format_values(v) for v in values) + "]"
    return f"{values:.6g}"


def _shape(described: dict[str, Any] | None) -> str:
    return "(" + ", ".join(map(str, described["shape"])) + ")" if described is not None else "()"
