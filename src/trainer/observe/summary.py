"""summary.json: how a run ended and what it scored; the value a sweeper gets back; the console's result table."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any, Optional

from trainer.observe.records import writing
from trainer.observe.text_table import aligned

if typing.TYPE_CHECKING:
    from trainer.training.engine import Engine, FitResult


def summary_of(engine: Engine, result: FitResult, test: dict[str, float], train_samples: int) -> dict[str, Any]:
    """What summary.json holds: the test metrics of the best weights, how the run ended, what it cost."""
    return {
        "test": test,
        "monitor": engine.early_stopping.monitor,
        "mode": engine.early_stopping.mode,
        "best_value": result.best_value,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason.value,
        "epochs": result.epochs,
        "steps": engine.global_step,
        "train_samples": train_samples,
        "train_seconds": round(result.train_seconds, 3),  # over every start of a resumed run
        "starts": result.starts,
        "device": str(engine.device),
        "processes": engine.processes.world_size,
        "num_parameters": sum(p.numel() for p in engine.model.parameters()),
    }


def write_summary(summary: dict[str, Any], path: Path) -> None:
    with writing(path):
        path.write_text(json.dumps(summary, indent=2) + "\n")


def value_for_sweepers(best_value: Optional[float], mode: str) -> float:
    """The best value of the monitored metric; with no finite epoch, the worst value there is, which a sweeper
    ranks last (it cannot rank nan, and Optuna refuses it)."""
    if best_value is None:
        return math.inf if mode == "min" else -math.inf
    return best_value


def result_table(summary: dict) -> str:
    """The test metrics as a small table, with how the run ended."""
    if not summary["test"]:
        return f"no epoch ended with a finite loss (stopped by {summary['stop_reason']}): nothing to test"
    return "\n".join([f"test metrics (best epoch {summary['best_epoch']} of {summary['epochs']}, "
                      f"stopped by {summary['stop_reason']}, {summary['train_seconds']:.1f}s on {summary['device']})",
                      *metric_lines(summary["test"])])


def metric_lines(metrics: dict[str, float]) -> list[str]:
    """One indented line per metric, the names aligned: `  loss      0.1234`."""
    return aligned([(name, f"{value:.4f}") for name, value in metrics.items()], indent="  ")
