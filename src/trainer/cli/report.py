"""The `train-report` command: the jobs of a sweep in one table, best first.

`train -m ...` runs one job per folder of the sweep directory (0/, 1/, ...), each holding the job's
.hydra/overrides.yaml and, once it has finished, summary.json. `train-report SWEEP_DIR` reads them all, ranks
the jobs by the best value of their monitored metric, prints the table as markdown and writes it to
SWEEP_DIR/report.md and SWEEP_DIR/report.csv (one column per override key), and draws the learning curves of
every job with a metrics.csv on one figure, SWEEP_DIR/curves.png. It imports no torch, so it answers at once,
also while the sweep is still running.

A job whose overrides.yaml or summary.json is not what train writes is left out of the table and the curves, with
a warning line naming the file and what is wrong with it (trainer.observe.run_records).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from trainer.cli.usage import exit_with_usage_error
from trainer.config import ConfigError
from trainer.observe import report


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point of `train-report`."""
    parser = argparse.ArgumentParser(
        prog="train-report", description="The jobs of a `train -m` sweep in one table, best first: printed as "
                                         "markdown, written to SWEEP_DIR/report.md and SWEEP_DIR/report.csv; "
                                         "their learning curves on one figure, SWEEP_DIR/curves.png.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", type=Path, help="e.g. multirun/2024-05-01/12-00-00-000000")
    parser.add_argument("--markdown", metavar="PATH", type=Path,
                        help="write the markdown here (default: SWEEP_DIR/report.md)")
    parser.add_argument("--csv", metavar="PATH", type=Path, help="write the CSV here (default: SWEEP_DIR/report.csv)")
    parser.add_argument("--curves", metavar="PATH", type=Path,
                        help="draw the learning curves here (default: SWEEP_DIR/curves.png)")
    args = parser.parse_args(argv)
    try:
        print(report(args.sweep_dir, args.markdown or args.sweep_dir / "report.md",
                     args.csv or args.sweep_dir / "report.csv", args.curves or args.sweep_dir / "curves.png"), end="")
    except ConfigError as error:
        exit_with_usage_error("train-report", str(error))
