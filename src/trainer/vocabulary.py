"""The words the parts of trainer share, in one place and without torch: the tasks a data set can be for, the
validation metrics each task measures and which way each is better, and the losses of configs/loss/ with the
tasks they can train, and why a run ends. config checks settings against them, metrics computes the metrics, the
engine's early stopping and train-report rank by their directions, summary.json says the reason; and the name the
package is installed by, which the messages that ask for an extra give."""

from __future__ import annotations

import enum

TASKS = ("multiclass", "binary", "regression")


def measured_metrics(task: str) -> tuple[str, ...]:
    """The validation metrics a run of this task logs (metrics.split_metrics computes them, Engine.evaluate
    prefixes them with val_)."""
    names = ("loss", "mse", "rmse", "r2") if task == "regression" else ("loss", "accuracy")
    return tuple(f"val_{name}" for name in names)


METRICS = tuple(dict.fromkeys(measured_metrics("multiclass") + measured_metrics("regression")))
METRICS_MAXIMISED = ("val_accuracy", "val_r2")


def better(metric: str) -> str:
    """max for accuracy and R^2, min for losses and errors: the direction in which a metric improves."""
    return "max" if metric in METRICS_MAXIMISED else "min"


LOSSES = {
    "torch.nn.CrossEntropyLoss": ("cross_entropy", ("multiclass", "binary")),
    "torch.nn.BCEWithLogitsLoss": ("bce", ("binary",)),
    "torch.nn.MSELoss": ("mse", ("regression",)),
    "torch.nn.SmoothL1Loss": ("smooth_l1", ("regression",)),
    "torch.nn.L1Loss": ("l1", ("regression",)),
}
"""The losses of configs/loss/ by `_target_`: their option name and the tasks they can train. (A loss of your own
is not checked.)"""
USUAL_LOSS = {"multiclass": "torch.nn.CrossEntropyLoss", "binary": "torch.nn.BCEWithLogitsLoss",
              "regression": "torch.nn.MSELoss"}
"""loss=auto: the usual loss of each task, for sets whose task is known only once read (data=csv)."""


class StopReason(str, enum.Enum):
    """Why a run ended."""

    MAX_EPOCHS = "max_epochs"
    EARLY_STOPPING = "early_stopping"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    """A stop signal (SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C): last.pt holds where training was."""


DISTRIBUTION = "hydra-torch-trainer"
"""The name pip installs this package by (pyproject's [project] name); it is imported as `trainer`. The package index
gives the name `trainer` to another project, whose import name is `trainer` too."""


def install_command(extra: str) -> str:
    """The command that installs one of pyproject's extras: pip install "hydra-torch-trainer[onnx]"."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'
