"""Check the accuracy targets the README quotes: each setting trained with 5 seeds, mean test metric vs target.

    python scripts/accuracy.py            # prints a markdown table; exit 1 if a target is missed

Each run is the real `train` pipeline (the configs composed as the command line would, then trainer.run.train),
in a temporary run directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from trainer.config import config_dir
from trainer.run import train

SEEDS = range(5)
# (command-line overrides, test metric, target, whether larger is better)
TARGETS = [
    ("", "accuracy", 0.975, True),
    ("model=dropout_net", "accuracy", 0.97, True),
    ("model=transformer", "accuracy", 0.95, True),
    ("data=breast_cancer", "accuracy", 0.95, True),
    ("data=regression", "mse", 0.05, False),
]


def test_metric(overrides: list[str], metric: str, seed: int) -> float:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"seed={seed}"])
    run_dir = Path(tempfile.mkdtemp(prefix="accuracy-"))
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, run_dir)
    return json.loads((run_dir / "summary.json").read_text())["test"][metric]


def main() -> int:
    print("| train ... | test metric | target | mean of 5 seeds | min | max | met |")
    print("|---|---|---|---|---|---|---|")
    all_met = True
    for overrides, metric, target, larger_is_better in TARGETS:
        values = [test_metric(overrides.split(), metric, seed) for seed in SEEDS]
        mean = statistics.mean(values)
        met = mean >= target if larger_is_better else mean < target
        all_met &= met
        bound = ">=" if larger_is_better else "<"
        command = " ".join(["train", *overrides.split()])
        print(f"| `{command}` | {metric} | {bound} {target} | {mean:.4f} | {min(values):.4f} | "
              f"{max(values):.4f} | {'yes' if met else 'NO'} |", flush=True)
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
