"""A run's records read as a stranger's: .hydra/overrides.yaml, summary.json, and the job folders of a sweep.

A folder may hold files written by anyone. A record that is not what train writes (damaged, cut short, or crafted:
a YAML tag that would call Python, values of the wrong types) raises UnreadableFile, naming the file and what is
wrong with it, so that train-report can leave that one job out with a warning: one bad job does not hide the rest
of the sweep. Nothing a file says is ever run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

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
