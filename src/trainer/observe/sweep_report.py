"""A sweep's jobs in one table, best first: read from the sweep directory, ranked, written as markdown and CSV,
and their learning curves drawn on one figure (train-report's work)."""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any

from trainer.config import ConfigError
from trainer.observe.compared_runs import draw_curves, shared_overrides
from trainer.observe.run_records import Job, UnreadableFile, find_job_dirs, read_job
from trainer.vocabulary import better

NO_SUMMARY = "running or failed"
"""The stop reason shown for a job without a summary: still running, killed, or stopped by a mistake."""


def rank(job: Job) -> tuple:
    """Jobs with a summary first, grouped by monitor, each group best first: finished jobs before interrupted
    ones (their value is that of a partial run), a value before none (no epoch ended finite). Jobs without a
    summary last. Ties keep job order (the sort is stable)."""
    summary = job.summary
    if summary is None:
        return (True,)
    value = summary["best_value"]
    has_value = value is not None and math.isfinite(value)
    mode = direction(summary)
    return (False, summary["monitor"], mode, summary["stop_reason"] == "interrupted", not has_value,
            (-value if mode == "max" else value) if has_value else 0.0)


def direction(summary: dict) -> str:
    """max or min: which of a job's values is better, as the run itself decided when it chose its best.pt
    (summary.json's mode); for a summary written before it said so, the monitored metric's own direction."""
    mode = summary.get("mode")
    return mode if mode in ("min", "max") else better(summary["monitor"])


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


def describe_ranking(rankings: list[tuple[str, str]]) -> str:
    """rankings: the (monitor, direction) of the jobs, each once."""
    if not rankings:
        return "none finished yet"
    directions = ", ".join(f"{monitor} ({'higher' if mode == 'max' else 'lower'} is better)"
                           for monitor, mode in rankings)
    return ("ranked within each monitor: " if len(rankings) > 1 else "ranked by ") + directions


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
    """The sweep's jobs, ranked; a job with an unreadable file is left out, with a warning. Raises ConfigError when
    sweep_dir is not a sweep, or none of its jobs can be read."""
    if not os.path.isdir(sweep_dir):  # False for a name too long for the OS, where Path.is_dir raises
        raise ConfigError("SWEEP_DIR", str(sweep_dir), "a directory that exists")
    job_dirs = find_job_dirs(sweep_dir)
    if not job_dirs:
        raise ConfigError("SWEEP_DIR", str(sweep_dir), "a sweep directory: no folder below it holds summary.json "
                                                       "or .hydra/overrides.yaml")
    jobs = []
    for job_dir in job_dirs:
        try:
            jobs.append(read_job(sweep_dir, job_dir))
        except UnreadableFile as error:
            print(f"train-report: warning: {error}; job {job_dir.relative_to(sweep_dir).as_posix()} is left out",
                  file=sys.stderr)
    if not jobs:
        raise ConfigError("SWEEP_DIR", str(sweep_dir), f"a sweep with a job that can be read (all {len(job_dirs)} "
                                                       f"are left out: see the warnings)")
    return sorted(jobs, key=rank)


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
    rankings = sorted({(job.summary["monitor"], direction(job.summary)) for job in jobs if job.summary is not None})
    markdown = to_markdown(rows, override_keys, f"# {sweep_dir}: {len(jobs)} jobs, {describe_ranking(rankings)}")
    try:
        markdown_path.write_text(markdown)
        write_csv(rows, csv_path)
        drawn = draw_curves(jobs, sweep_dir, curves_path, heading=str(sweep_dir))
    except OSError as error:
        raise ConfigError("report file", error.filename, f"a file that can be written ({error.strerror})") from None
    if not drawn:
        return markdown
    return markdown + f"\nLearning curves of the {len(drawn)} jobs with a metrics.csv: {curves_path}\n"
