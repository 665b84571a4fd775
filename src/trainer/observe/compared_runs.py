"""Several runs' learning curves on one figure, each run labelled by the overrides that tell it from the others:
train-report's curves of a sweep's jobs, and train-plot's of any runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from trainer.config import ConfigError
from trainer.observe.curves import draw_runs_curves, read_metrics_csv
from trainer.observe.run_records import Job, UnreadableFile, read_overrides, read_summary


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
    runs = []
    for job in jobs:
        metrics_file = root / job.path / "metrics.csv"
        if not metrics_file.is_file():
            continue
        try:
            rows = read_metrics_csv(metrics_file)
        except ValueError as error:  # not a metrics.csv train writes
            print(f"train-report: warning: {error}; the curves of job {job.path} are left out", file=sys.stderr)
            continue
        if rows:
            runs.append((job, rows))
    if not runs:
        return []
    drawn = [job for job, _ in runs]
    labels = job_labels(drawn)
    shared = " ".join(f"{key}={value}" for key, value in shared_overrides([job.overrides for job in drawn]).items())
    draw_runs_curves({label: rows for label, (_, rows) in zip(labels, runs)}, path,
                     best_epochs={label: (job.summary or {}).get("best_epoch") for label, job in zip(labels, drawn)},
                     title=", ".join(filter(None, [heading, shared and f"same in every job: {shared}"])))
    return drawn


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
