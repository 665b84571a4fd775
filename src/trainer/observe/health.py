"""Gradient health: every N steps, for each parameter tensor, how large its gradient is, how large its weights
are, and how much the step changed them; warnings that name a tensor whose gradient vanishes or explodes.

The update-to-weight ratio ||w_after - w_before|| / ||w_before|| says how fast a layer learns: around 1e-3 is
the usual rule of thumb; far below, the layer hardly moves; far above, it is thrown around.
"""

from __future__ import annotations

import csv
import logging
import math
import typing
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from torch import nn

from trainer.config import HealthConfig
from trainer.observe.records import writing
from trainer.training.observers import Observer

if typing.TYPE_CHECKING:
    from trainer.training.engine import Engine

log = logging.getLogger(__name__)

VANISHING_HINT = ("the layers they belong to barely learn. Usual cures: ReLU or GELU instead of sigmoid or tanh "
                  "(model.activation), He or Xavier initialisation (model.init), normalisation (model.norm), "
                  "residual connections (model.residual=true), or fewer layers")
EXPLODING_HINT = ("the steps throw the weights around. Usual cures: a lower learning rate (optimizer.lr), "
                  "gradient clipping (trainer.grad_clip=1.0), normalisation (model.norm), or a smaller "
                  "initialisation (model.init=xavier)")


@runtime_checkable
class HealthReportSink(Protocol):
    """A logger that shows each gradient check too (logger=tensorboard; logger=mlflow logs health.csv at the end)."""

    def log_health(self, report: list[TensorHealth]) -> None: ...


@dataclass
class TensorHealth:
    """One parameter tensor at one checked step; a row of health.csv."""

    step: int
    name: str
    """The parameter's name in the model, e.g. hidden.0.linear.weight."""
    grad_norm: float
    weight_norm: float
    """Of the weights before the step."""
    update_ratio: float
    """||weights after the step - before|| / ||weights before||."""


class GradientHealth(Observer):
    """Checks the gradients at the first step and every `every_n_steps`-th; appends to health.csv and warns
    once per tensor and kind (vanishing, exploding), the tensors of one check in one warning. Rank 0 checks:
    every process has the same gradients after a step."""

    def __init__(self, model: nn.Module, settings: HealthConfig, path: Optional[Path],
                 report_to: Optional[HealthReportSink] = None):
        self.settings = settings
        self.named_parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.records = HealthCsv(path) if path is not None else None
        """health.csv; None keeps nothing (only warns)."""
        self.report_to = report_to
        """A logger that shows each check too (logger=tensorboard)."""
        self.warned: set[tuple[str, str]] = set()
        self._before: Optional[tuple[list[torch.Tensor], float]] = None
        """The weights before the step being checked, and the float16 loss scale then."""
        self._kept: Optional[list[list[str]]] = None
        """health.csv's rows up to a checkpoint being resumed from, read by load_state_dict, written by on_resume."""

    def on_step_start(self, engine: Engine) -> None:
        if self.due(engine.global_step + 1):
            self._before = self.weights_before_step(), engine.precision.scale()

    def on_step_end(self, engine: Engine, loss: Optional[torch.Tensor]) -> None:
        if self._before is None:
            return
        (weights_before, scale), self._before = self._before, None
        if engine.precision.scale() < scale:
            return  # float16: the scaler found an overflow and left the step out: nothing to judge
        report = self.check(engine.global_step, weights_before)
        if self.report_to is not None:
            self.report_to.log_health(report)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # health.csv is read here, with every other part of the checkpoint and before any file is rewritten: a
        # file that cannot be read back fails the resume with the run directory as it was.
        if self.records is not None:
            self._kept = self.records.rows_up_to(state["engine"]["global_step"])

    def on_resume(self, engine: Engine) -> None:
        if self._kept is not None:
            self.records.write(self._kept)
        self._kept = None

    def due(self, step: int) -> bool:
        """Whether optimiser step `step` (counting from 1) is checked."""
        every = self.settings.every_n_steps
        return every is not None and (step == 1 or step % every == 0)

    def weights_before_step(self) -> list[torch.Tensor]:
        return [p.detach().clone() for _, p in self.named_parameters]

    def check(self, step: int, before: list[torch.Tensor]) -> list[TensorHealth]:
        """Measure every tensor after optimiser step `step`, whose weights before it were `before`; the gradients
        are the ones the step used (after unscaling and clipping). One device sync for all tensors."""
        named = [(name, p, old) for (name, p), old in zip(self.named_parameters, before) if p.grad is not None]
        if not named:
            return []
        names = [name for name, _, _ in named]
        params, olds = [p.detach() for _, p, _ in named], [old for _, _, old in named]
        grad_norms = torch._foreach_norm([p.grad.detach() for _, p, _ in named])  # one norm per tensor
        weight_norms = torch._foreach_norm(olds)
        update_norms = torch._foreach_norm(torch._foreach_sub(params, olds))
        measured = torch.stack([torch.stack(grad_norms), torch.stack(weight_norms), torch.stack(update_norms)])
        grad_norm, weight_norm, update_norm = measured.float().tolist()
        report = [TensorHealth(step, name, g, w, u / w if w > 0 else math.inf)
                  for name, g, w, u in zip(names, grad_norm, weight_norm, update_norm)]
        self.warn_about(report)
        if self.records is not None:
            self.records.append(report)
        return report

    def kind_of(self, grad_norm: float) -> Optional[str]:
        """vanishing, exploding, or None for a gradient norm within the bounds."""
        if not math.isfinite(grad_norm) or grad_norm > self.settings.exploding_above:
            return "exploding"
        return "vanishing" if grad_norm < self.settings.vanishing_below else None

    def warn_about(self, report: list[TensorHealth]) -> None:
        """One warning per kind per check, naming the tensors found so for the first time."""
        for kind, bound, hint in (("vanishing", f"below {self.settings.vanishing_below:g}", VANISHING_HINT),
                                  ("exploding", f"above {self.settings.exploding_above:g} or not finite",
                                   EXPLODING_HINT)):
            found = [t for t in report if self.kind_of(t.grad_norm) == kind and (t.name, kind) not in self.warned]
            if not found:
                continue
            self.warned.update((t.name, kind) for t in found)
            named = ", ".join(f"{t.name} {t.grad_norm:.3g}" for t in found)
            log.warning("step %d: %s gradients (norm %s) in %s: %s (trainer.health sets the bounds; health.csv "
                        "has every check)", report[0].step, kind, bound, named, hint)


class HealthCsv:
    """health.csv: a row per parameter tensor per check, kept in line with the run's checkpoints."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, report: list[TensorHealth]) -> None:
        new_file = not self.path.exists()
        with writing(self.path), self.path.open("a", newline="") as file:
            writer = csv.writer(file)
            if new_file:
                writer.writerow([f.name for f in fields(TensorHealth)])
            writer.writerows(astuple(tensor) for tensor in report)

    def rows_up_to(self, step: int) -> Optional[list[list[str]]]:
        """The header and the whole rows of the steps up to `step`, for a run resumed there (it takes the later
        steps again); None when there is no file. A run killed inside a write, or stopped by a full disk, leaves the
        file empty or its last row torn: the header is written again and only whole rows are kept."""
        if not self.path.exists():
            return None
        with self.path.open(newline="") as file:
            rows = list(csv.reader(file))
        header = [f.name for f in fields(TensorHealth)]
        return [header] + [row for row in rows[1:] if len(row) == len(header) and row[0].isdigit()
                           and int(row[0]) <= step]

    def write(self, rows: list[list[str]]) -> None:
        with writing(self.path), self.path.open("w", newline="") as file:
            csv.writer(file).writerows(rows)
