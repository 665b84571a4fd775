"""The `train-report` command: the jobs of a sweep in one table, best first.

`train -m ...` runs one job per folder of the sweep directory (0/, 1/, ...), each holding the job's
.hydra/overrides.yaml and, once it has finished, summary.json. `train-report SWEEP_DIR` reads them all, ranks
the jobs by the best value of their monitored metric, prints the table as markdown and writes it to
SWEEP_DIR/report.md and SWEEP_DIR/report.csv (one column per override key), and draws the learning curves of
every job with a metrics.csv on one figure, SWEEP_DIR/curves.png. It imports no torch, so it answers at once,
also while the sweep is still running.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional

from omegaconf import OmegaConf

from trainer.config import METRICS_MAXIMISED, ConfigError
from trainer.curves import draw_runs_curves, read_metrics_csv

USAGE_ERROR = 2
NO_SUMMARY = "running or failed"
"""The stop reason shown for a job without a summary: still running, killed, or stopped by a mistake."""


@dataclass
class Job:
    path: str                   # relative to the sweep directory
    overrides: dict[str, str]   # key -> value, as on the command line
    summary: Optional[dict]     # summary.json, or None when the job has not written one


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every folder below sweep_dir, at any depth, that holds a job: .hydra/overrides.yaml (written once the job
    has started) or summary.json. In job order: 2/ before 10/."""
    started = {path.parent.parent for path in sweep_dir.rglob(".hydra/overrides.yaml")}
    finished = {path.parent for path in sweep_dir.rglob("summary.json")}
    # Padding each name's digits to one width orders numbered folders by number and keeps names in text order.
    return sorted(started | finished, key=lambda folder: [part.zfill(9) for part in folder.parts])


def read_job(sweep_dir: Path, job_dir: Path) -> Job:
    return Job(path=job_dir.relative_to(sweep_dir).as_posix(), overrides=read_overrides(job_dir),
               summary=read_summary(job_dir / "summary.json"))


def read_overrides(job_dir: Path) -> dict[str, str]:
    """The job's .hydra/overrides.yaml as key -> value; none before the job has started."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
    return dict(override.partition("=")[::2] for override in overrides)


def read_summary(path: Path) -> Optional[dict]:
    """summary.json, or None when there is none yet or it was cut short while being written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def rank(job: Job) -> tuple:
    """Jobs with a summary first, grouped by monitor, each group best first: finished jobs before interrupted
    ones (their value is that of a partial run), a value before none (no epoch ended finite). Jobs without a
    summary last. Ties keep job order (the sort is stable)."""
    summary = job.summary
    if summary is None:
        return (True,)
    value = summary["best_value"]
    has_value = value is not None and math.isfinite(value)
    sign = -1 if summary["monitor"] in METRICS_MAXIMISED else 1
    return (False, summary["monitor"], summary["stop_reason"] == "interrupted", not has_value,
            sign * value if has_value else 0.0)


def union_in_order(lists: list[list[str]]) -> list[str]:
    """The names of all the lists, each once, in the order they first appear."""
    return list(dict.fromkeys(name for names in lists for name in names))


def table_rows(jobs: list[Job], override_keys: list[str]) -> list[dict[str, Any]]:
    """One row per job: its folder, one column per override key, the summary's ranking columns, test_METRIC
    for each test metric. Cells a job has no value for are None."""
    metrics = union_in_order([list((job.summary or {}).get("test", {})) for job in jobs])
    rows = []
    for job in jobs:
        summary = job.summary or {"stop_reason": NO_SUMMARY}
        rows.append({"job": job.path,
                     **{key: job.overrides.get(key) for key in override_keys},
                     **{key: summary.get(key) for key in ("monitor", "best_value", "best_epoch", "epochs")},
                     "stop_reason": summary["stop_reason"],
                     **{f"test_{name}": summary.get("test", {}).get(name) for name in metrics}})
    return rows


def shared_overrides(overrides: list[dict[str, Optional[str]]]) -> dict[str, str]:
    """The key=value pairs every job has alike: said once rather than for each job."""
    first, *others = overrides
    return {key: value for key, value in first.items()
            if value is not None and all(other.get(key) == value for other in others)}


def job_labels(jobs: list[Job]) -> list[str]:
    """What tells each job from the others: its overrides that not every job shares, as on the command line
    ("optimizer=sgd optimizer.lr=0.01"); its folder where it has none, and before them where they are not unique."""
    shared = shared_overrides([job.overrides for job in jobs])
    varying = [" ".join(f"{key}={value}" for key, value in job.overrides.items() if key not in shared)
               for job in jobs]
    labels = [label or job.path for job, label in zip(jobs, varying)]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{job.path}: {label}" if label else job.path for job, label in zip(jobs, varying)]


def draw_curves(jobs: list[Job], root: Path, path: Path, heading: str) -> list[Job]:
    """The learning curves of the jobs with rows in their metrics.csv (root / job.path / metrics.csv) on one
    figure at `path`, in the order given, labelled by job_labels, titled with the heading and the overrides the
    jobs share. Returns the jobs drawn."""
    metrics_files = [root / job.path / "metrics.csv" for job in jobs]
    runs = [(job, read_metrics_csv(file)) for job, file in zip(jobs, metrics_files) if file.is_file()]
    runs = [(job, rows) for job, rows in runs if rows]
    if not runs:
        return []
    drawn = [job for job, _ in runs]
    labels = job_labels(drawn)
    shared = " ".join(f"{key}={value}" for key, value in shared_overrides([job.overrides for job in drawn]).items())
    draw_runs_curves({label: rows for label, (_, rows) in zip(labels, runs)}, path,
                     best_epochs={label: (job.summary or {}).get("best_epoch") for label, job in zip(labels, drawn)},
                     title=", ".join(filter(None, [heading, shared and f"same in every job: {shared}"])))
    return drawn


def describe_ranking(monitors: list[str]) -> str:
    if not monitors:
        return "none finished yet"
    directions = ", ".join(f"{monitor} ({'higher' if monitor in METRICS_MAXIMISED else 'lower'} is better)"
                           for monitor in monitors)
    return ("ranked within each monitor: " if len(monitors) > 1 else "ranked by ") + directions


def to_markdown(rows: list[dict[str, Any]], override_keys: list[str], heading: str) -> str:
    """The table, with the overrides every job shares said once above it instead of repeated in a column."""
    shared = list(shared_overrides([{key: row[key] for key in override_keys} for row in rows]))
    columns = [column for column in rows[0] if column not in shared]
    lines = [heading, ""]
    if shared:
        lines += ["Same in every job: " + " ".join(f"{key}={rows[0][key]}" for key in shared), ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Full precision, a missing value as an empty cell."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_sweep(sweep_dir: Path) -> list[Job]:
    """The sweep's jobs, ranked. Raises ConfigError when sweep_dir is not a sweep."""
    if not sweep_dir.is_dir():
        raise ConfigError("SWEEP_DIR", str(sweep_dir), "a directory that exists")
    jobs = sorted((read_job(sweep_dir, job_dir) for job_dir in find_job_dirs(sweep_dir)), key=rank)
    if not jobs:
        raise ConfigError("SWEEP_DIR", str(sweep_dir), "a sweep directory: no folder below it holds summary.json "
                                                       "or .hydra/overrides.yaml")
    return jobs


def report(sweep_dir: Path, markdown_path: Path, csv_path: Path, curves_path: Path) -> str:
    """Read the sweep, write the markdown, the CSV and the curves; return the markdown, followed by where the
    curves went when some job had a metrics.csv to draw."""
    jobs = read_sweep(sweep_dir)
    monitors = sorted({job.summary["monitor"] for job in jobs if job.summary is not None})
    if len(monitors) > 1:  # a sweep over the monitor is legitimate, but one ranking across metrics is meaningless
        print(f"train-report: warning: the jobs monitor different metrics ({', '.join(monitors)}); each is "
              "ranked among the jobs with the same monitor", file=sys.stderr)
    override_keys = union_in_order([list(job.overrides) for job in jobs])
    rows = table_rows(jobs, override_keys)
    markdown = to_markdown(rows, override_keys, f"# {sweep_dir}: {len(jobs)} jobs, {describe_ranking(monitors)}")
    try:
        markdown_path.write_text(markdown)
        write_csv(rows, csv_path)
        drawn = draw_curves(jobs, sweep_dir, curves_path, heading=str(sweep_dir))
    except OSError as error:
        raise ConfigError("report file", error.filename, f"a file that can be written ({error.strerror})") from None
    if not drawn:
        return markdown
    return markdown + f"\nLearning curves of the {len(drawn)} jobs with a metrics.csv: {curves_path}\n"


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
        _exit_with(str(error))


def _exit_with(message: str) -> NoReturn:
    print(f"train-report: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
