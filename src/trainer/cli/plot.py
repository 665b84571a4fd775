"""The `train-plot` command: the learning curves of any runs on one figure, to compare them.

`train-plot RUN_DIR [RUN_DIR ...]` reads each run's metrics.csv (and summary.json for its best epoch, when the
run has ended) and draws them all on one figure, ./curves.png unless `--output` says otherwise. Each run is
labelled by the overrides that tell it from the others (its .hydra/overrides.yaml), or by its folder as given.
Like `train-report`, it imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from trainer.cli.usage import exit_with_usage_error
from trainer.config import ConfigError
from trainer.observe import plot


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
