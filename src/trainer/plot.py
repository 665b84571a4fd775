"""The `train-plot` command: the learning curves of any runs on one figure, to compare them.

`train-plot RUN_DIR [RUN_DIR ...]` reads each run's metrics.csv (and summary.json for its best epoch, when the
run has ended) and draws them all on one figure, ./curves.png unless `--output` says otherwise. Each run is
labelled by the overrides that tell it from the others (its .hydra/overrides.yaml), or by its folder as given.
Like `train-report`, it imports no torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

from trainer.config import ConfigError
from trainer.curves import read_metrics_csv
from trainer.report import Job, UnreadableFile, draw_curves, read_overrides, read_summary
from trainer.usage import exit_with_usage_error


def plot(run_dirs: list[Path], output: Path) -> None:
    """Draw the runs' curves at `output`. Raises ConfigError naming the first folder without a metrics.csv row, or
    with an overrides.yaml or summary.json that is not what train writes."""
    jobs = []
    for run_dir in run_dirs:
        metrics_file = run_dir / "metrics.csv"
        try:
            # os.path.isfile: False for a name too long for the OS, where Path.is_file raises
            rows = read_metrics_csv(metrics_file) if os.path.isfile(metrics_file) else []
        except ValueError as error:
            raise ConfigError("RUN_DIR", str(run_dir), f"a run's folder as train writes it ({error})") from None
        if not rows:
            raise ConfigError("RUN_DIR", str(run_dir), "a run's folder holding metrics.csv (a run writes a row to it "
                                                       "at the end of each epoch)")
        try:
            jobs.append(Job(path=str(run_dir), overrides=read_overrides(run_dir),
                            summary=read_summary(run_dir / "summary.json")))
        except UnreadableFile as error:
            raise ConfigError("RUN_DIR", str(run_dir), f"a run's folder as train writes it ({error})") from None
    try:
        draw_curves(jobs, Path(), output, heading="")
    except OSError as error:
        raise ConfigError("--output", str(output), f"a file that can be written ({error.strerror})") from None


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of `train-plot`."""
    parser = argparse.ArgumentParser(
        prog="train-plot", description="The learning curves of several runs on one figure: training and "
                                       "validation loss, the validation metrics and the learning rate against "
                                       "epoch, one colour per run.")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", type=Path,
                        help="a run's folder: it holds metrics.csv")
    parser.add_argument("--output", metavar="PATH", type=Path, default=Path("curves.png"),
                        help="write the figure here (default: ./curves.png)")
    args = parser.parse_args(argv)
    run_dirs = list(dict.fromkeys(args.run_dirs))  # a folder given twice is drawn once
    try:
        plot(run_dirs, args.output)
    except ConfigError as error:
        exit_with_usage_error("train-plot", str(error))
    print(f"Learning curves of {len(run_dirs)} runs: {args.output}")
