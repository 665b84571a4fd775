"""metrics.csv: one row per epoch, the run's learning curves as a table."""

from __future__ import annotations

import csv
import typing
from pathlib import Path
from typing import Any, Optional

from trainer.observe.records import writing
from trainer.training.observers import Observer

if typing.TYPE_CHECKING:
    from trainer.training.engine import Engine


class MetricsLog(Observer):
    """Appends each epoch's row to metrics.csv; the columns are fixed by the first row. Every checkpoint keeps
    the rows ("metrics"), so that a resumed run's file is the one an uninterrupted run writes."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        """None keeps the rows without writing them (the processes other than rank 0 of a distributed run)."""
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, engine: Engine, row: dict[str, float]) -> None:
        self.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = state["metrics"]
        if not (isinstance(rows, list) and all(isinstance(row, dict) and row.keys() == rows[0].keys()
                                               for row in rows)):
            raise ValueError("its metrics are not the rows of one table")
        self.rows = rows

    def on_resume(self, engine: Engine) -> None:
        """Start over from the checkpoint's rows: metrics.csv holds exactly them, and new rows follow."""
        rows, self.rows = self.rows, []
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, float]) -> None:
        first = not self.rows
        self.rows.append(row)
        if self.path is None:
            return
        with writing(self.path), self.path.open("w" if first else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(self.rows[0]))
            if first:
                writer.writeheader()
            writer.writerow(row)
