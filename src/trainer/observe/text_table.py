"""Plain-text tables for the console: the model summary, test metrics, a confusion matrix, predictions."""

from __future__ import annotations

from typing import Collection, Sequence


def aligned(rows: Sequence[Sequence[str]], right: Collection[int] = (), indent: str = "") -> list[str]:
    """Each row as a line: every column padded to its widest cell, right-aligned for the column indices in
    `right` (numbers), two spaces apart; a last column aligned left is not padded, so no line ends in spaces."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    last = len(widths) - 1
    return [indent + "  ".join(cell.rjust(width) if column in right else cell if column == last else cell.ljust(width)
                               for column, (cell, width) in enumerate(zip(row, widths)))
            for row in rows]
