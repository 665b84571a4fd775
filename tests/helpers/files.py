"""The files a run writes, as the tests make and read them: metrics.csv rows, PNGs (and the size of their panels),
whole folders; and the CSV and Parquet tables a user brings."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from matplotlib.image import imread

from trainer.observe.curves import DPI, PANEL_INCHES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def made_up_rows(epochs: int = 4, lr: float = 1e-3, lr_factor: float = 1.0, regression: bool = False,
                 offset: float = 0.0) -> list[dict[str, float]]:
    """metrics.csv rows as a run writes them: a loss that falls, a metric that rises, lr times lr_factor each epoch."""
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "step": 10 * epoch, "lr": lr * lr_factor ** (epoch - 1),
               "train_loss": 1 / epoch + offset, "val_loss": 1.2 / epoch + offset}
        if regression:
            row |= {"val_mse": 4 / epoch, "val_rmse": 2 / math.sqrt(epoch), "val_r2": 1 - 1 / epoch}
        else:
            row["val_accuracy"] = 1 - 0.5 / epoch - offset
        rows.append(row | {"seconds": 0.1})
    return rows


def write_metrics_csv(run_dir: Path, rows: list[dict[str, float]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels of a file that must be a PNG."""
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    height, width = imread(path).shape[:2]
    return width, height


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file's bytes and modification time, every folder's name."""
    return {str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def panels_size(columns: int, rows: int = 1) -> tuple[int, int]:
    """The pixels of `columns` by `rows` panels: PANEL_INCHES each at DPI."""
    return round(columns * PANEL_INCHES[0] * DPI), round(rows * PANEL_INCHES[1] * DPI)


def write(path: Path, text: str) -> str:
    """`text` written to `path`: the path, as a config names a file."""
    path.write_text(text)
    return str(path)


def table(path: Path, header: str, rows: list) -> str:
    """A CSV of `header` and one line per row (a sequence of values)."""
    return write(path, "\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")


def parquet_bytes(**columns) -> bytes:
    """A Parquet file of `columns` (name: values or a pyarrow array), with a checksum of each page (Spark's writer
    keeps them, pyarrow's may)."""
    import pyarrow as pa  # imported by the tests that write Parquet only
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, write_page_checksum=True)
    return sink.getvalue().to_pybytes()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` as a process sees a read-only data folder: the same files at a path where nothing can be written.
    For root, whom file modes do not stop, a read-only bind mount of it (skipped where mounting is not allowed);
    for anyone else, the folder and its contents without write permission."""
    if os.geteuid() != 0:
        contents = sorted(folder.rglob("*"))
        for path in [folder, *contents]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path in [folder, *contents]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    view = folder.with_name(folder.name + "-read-only")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True, text=True)
    if mounted.returncode != 0:
        view.rmdir()
        pytest.skip(f"root cannot be kept from writing without a read-only mount: {mounted.stderr.strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()
