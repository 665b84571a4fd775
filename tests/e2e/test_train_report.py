"""`train-report` as a user runs it: a process of its own, which never imports torch. (tests/unit/cli/test_report.py
holds the report's own tests; tests/e2e/test_sweeps.py reports on a real sweep.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.sweeps import write_sweep


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """The five jobs of helpers.sweeps.write_sweep."""
    return write_sweep(tmp_path / "sweep")


def test_the_report_does_not_import_torch(sweep):
    command = "import sys; from trainer.cli.report import main; main(); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", command, str(sweep)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (sweep / "report.md").read_text()
