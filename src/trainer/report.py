"""The `train-report` command: the jobs of a sweep in one table, best first.

`train -m ...` runs one job per folder of the sweep directory (0/, 1/, ...), each holding the job's
.hydra/overrides.yaml and, once it has finished, summary.json. `train-report SWEEP_DIR` reads them all, ranks
the jobs by the best value of their monitored metric, prints the table as markdown and writes it to
SWEEP_DIR/report.md and SWEEP_DIR/report.csv (one column per override key), and draws the learning curves of
every job with a metrics.csv on one figure, SWEEP_DIR/curves.png. It imports no torch, so it answers at once,
also while the sweep is still running.

A sweep folder may hold files written by anyone. A job whose overrides.yaml or summary.json is not what train
writes (damaged, cut short, or crafted: a YAML tag that would call Python, values of the wrong types) is left out
of the table and the curves, with a warning line naming the file and what is wrong with it: one bad job does not
hide the rest of the sweep. Nothing a file says is ever run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from trainer.config import ConfigError
from trainer.curves import draw_runs_curves, read_metrics_csv
from trainer.usage import exit_with_usage_error
from trainer.vocabulary import better

NO_SUMMARY = "running or failed"
"""The stop reason shown for a job without a summary: still running, killed, or stopped by a mistake."""
JOB_FILE_MAX_BYTES = 1 << 20
"""train writes overrides.yaml and summary.json of a few kilobytes: a larger one is not train's, and is not read."""
SUMMARY_TYPES = {"monitor": (str,), "best_value": (int, float, type(None)), "best_epoch": (int, type(None)),
                 "stop_reason": (str,), "epochs": (int,), "test": (dict,)}
"""The keys of summary.json the report reads, and the types train writes each with."""


class UnreadableFile(Exception):
    """A job's file that is not what train writes; the message names the file and what is wrong with it."""


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
    """The job's .hydra/overrides.yaml as key -> value; none before the job has started. YAML's safe loader reads
    it: it builds no object a tag names (`!!python/object/apply:os.system` is refused), and the values stay the
    text typed on the command line (no ${...} is resolved). Raises UnreadableFile for anything but a list of
    strings."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    text = read_record_text(overrides_file)
    if text is None:
        return {}
    try:
        overrides = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise UnreadableFile(f"{overrides_file}: not the YAML list train writes ({_first_line(error)})") from None
    overrides = [] if overrides is None else overrides  # an empty file
    if not isinstance(overrides, list) or not all(isinstance(override, str) for override in overrides):
        raise UnreadableFile(f"{overrides_file}: not the YAML list of key=value strings train writes (it holds "
                             f"{overrides!r:.60})")
    return dict(override.partition("=")[::2] for override in overrides)


def read_summary(path: Path) -> Optional[dict]:
    """summary.json, or None when the job has not written one. Raises UnreadableFile for one that is not the JSON
    object train writes, with the types it writes (SUMMARY_TYPES; the test metrics numbers)."""
    text = read_record_text(path)
    if text is None:
        return None
    try:
        summary = json.loads(text)
    except (ValueError, RecursionError) as error:  # ValueError: not JSON
        raise UnreadableFile(f"{path}: not JSON, or cut short while being written ({_first_line(error)})") from None
    if not isinstance(summary, dict):
        raise UnreadableFile(f"{path}: not the JSON object train writes (it holds {summary!r:.60})")
    for key, types in SUMMARY_TYPES.items():
        if key not in summary:
            raise UnreadableFile(f"{path}: it has no {key!r}, which train writes")
        if not isinstance(summary[key], types) or isinstance(summary[key], bool):
            raise UnreadableFile(f"{path}: {key!r} is {summary[key]!r:.60}, not what train writes there")
    for name, value in summary["test"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UnreadableFile(f"{path}: the test metric {name!r} is {value!r:.60}, not a number")
    return summary


def read_record_text(path: Path) -> Optional[str]:
    """A run's record (summary.json, .hydra/*.yaml) as text; None when there is none. Raises UnreadableFile for one
    that is not a regular file (a FIFO would block the read), is larger than JOB_FILE_MAX_BYTES, or is not UTF-8."""
    try:
        if not path.exists():
            return None
        if not path.is_file() or path.stat().st_size > JOB_FILE_MAX_BYTES:
            raise UnreadableFile(f"{path}: not a file of at most {JOB_FILE_MAX_BYTES} bytes, as train writes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableFile(f"{path}: not a readable UTF-8 file ({error})") from None


def _first_line(error: Exception) -> str:
    """A parser's message on one line (YAML's spans several, with the text it stopped at)."""
    return " ".join(str(error).split())


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
