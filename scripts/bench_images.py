"""How fast `train data=image_folder` trains on a folder of PNGs, side by side with the tutorials' ImageFolder loop.

    python scripts/bench_images.py                   # 10 classes x 2,000 generated 28x28 PNGs; 3 rounds of 3 epochs
    python scripts/bench_images.py --quick           # 10 x 200 PNGs, 1 round of 2 epochs: that it runs, not its figures
    python scripts/bench_images.py --work-dir imgs --out bench-images   # keep the folder for the next run; the figures

The folder (DIR/<class>/<image>.png, grey, a class-dependent bright square on noise, so that a model can learn it)
is generated once, by one process per CPU, into --work-dir, and reused by every round (and by a later run given
the same --work-dir); the time it took is printed. Three cases, each in its own child process, in turn per round:
  (a) tutorial: torchvision ImageFolder + Grayscale/ToTensor/Normalize + DataLoader(batch_size=64, shuffle=True,
      num_workers=2), with bench.py's MLP 784-128-64-10 and Adam: the tutorials' way to train on a folder.
  (b) train, cache built: `train data=image_folder data.path=DIR data.cache_dir=WORK/cache` with bench.py's model,
      optimizer and batch arguments, the cache removed first, so that it decodes every PNG before epoch 1.
  (c) train, cache reused: the same command once more, reading the cache (b) left: what every later run costs.
First epoch: wall time from the child's launch to the end of epoch 1's training pass, all that comes before it
included (imports, Hydra, listing the folder, and for (b) decoding and caching every image; for (a) the workers'
start). Later epochs: the median training pass of epochs 2..E per sample trained. `train` holds out a validation
and a test split (its summary.json's train_samples says how many it trains on) and the tutorial trains on the whole
folder, so the two compare per training sample; (b)'s whole epoch (its validation and checkpoint writes too,
metrics.csv's seconds) per training sample is compared as well, the stricter figure. (b)'s start to its first step
less (c)'s is what decoding and caching the folder cost.
Goal (issue 18, 2-core CPU): (a)/(b) per sample of later epochs >= 5. The first-epoch ratios are informational.
The PNGs sit in the system's page cache once generated, so both sides time decoding, not the disk.
--out DIR keeps every round's figures there (bench.json) and the tables (bench.md): give it a folder of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

# bench.py's cases and helpers, next to this file (which Python puts first on sys.path), so both time the same loop.
from bench import (BATCH_SIZE, CaseFailed, mnist_train_args, peak_rss_gb, run_child, run_train, train_passes,
                   tutorial_model, write_outputs)

CLASSES = 10
GOAL = 5.0
CASES = {"tutorial": "(a) tutorial", "built": "(b) train, cache built", "reused": "(c) train, cache reused"}


def write_class(task: tuple[str, int, int]) -> None:
    """`count` 28x28 grey PNGs of class `label` into folder/class_<label>: noise, and a bright 8x8 square whose
    place (one of 10 on a 5x2 grid, shifted by up to 2 pixels) is the class; seeded, so a folder is always the same."""
    import numpy as np
    from PIL import Image

    folder, label, count = task
    rng = np.random.default_rng(label)
    target = Path(folder) / f"class_{label}"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        top, left = 3 + 13 * (label // 5) + rng.integers(-2, 3), 1 + 5 * (label % 5) + rng.integers(-1, 2)
        image[max(top, 0):top + 8, max(left, 0):left + 8] = rng.integers(180, 256, dtype=np.uint8)
        Image.fromarray(image).save(target / f"{i:05d}.png")


def generate(work: Path, per_class: int) -> tuple[Path, float | None]:
    """WORK/images with CLASSES x `per_class` PNGs, one process per CPU; the seconds it took, or None when WORK
    already had that folder (WORK/images.json records what was written, once all of it was)."""
    folder, record = work / "images", work / "images.json"
    wanted = {"classes": CLASSES, "per_class": per_class}
    if record.exists() and json.loads(record.read_text()) == wanted:
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(write_class, [(str(folder), label, per_class) for label in range(CLASSES)])
    record.write_text(json.dumps(wanted))
    return folder, time.perf_counter() - start


def run_tutorial(folder: str, epochs: int, launched_at: float) -> dict:
    """(a) The tutorials' loop over an image folder: each PNG opened and decoded by PIL in a DataLoader worker
    (started afresh each epoch, the DataLoader's default), converted, normalised and collated, every epoch."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(folder, transform=transforms.Compose(
        [transforms.Grayscale(1), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=2)
    model = tutorial_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.time()
    figures = train_passes(model, optimizer, lambda: loader, epochs, torch.device("cpu"), launched_at)
    return {"samples": len(dataset), "first_epoch": started - launched_at + figures["seconds"][0], **figures}


def train_args(folder: str, cache: str) -> list[str]:
    """bench.py's (b) arguments (the MLP 784-128-64-10, Adam at the tutorial's settings, batch 64, on the CPU) with
    the image folder in place of MNIST."""
    mnist_only = ("data=", "data.root=", "data.download=")
    shared = [arg for arg in mnist_train_args("", "cpu") if not arg.startswith(mnist_only)]
    return ["data=image_folder", f"data.path={folder}", f"data.cache_dir={cache}", *shared]


def run_image_train(folder: str, cache: str, epochs: int, launched_at: float) -> dict:
    """(b) and (c): bench.run_train (the `train` command in this process, its training passes timed) on the
    folder; the end of epoch 1's training pass is taken through Engine.train_epoch, which run_train wraps in turn."""
    from trainer.training.engine import Engine

    ends, train_epoch = [], Engine.train_epoch

    def ended_train_epoch(self, batches):
        loss = train_epoch(self, batches)
        ends.append(time.time())
        return loss

    Engine.train_epoch = ended_train_epoch
    figures = run_train(train_args(folder, cache), epochs, launched_at)
    return {**figures, "first_epoch": ends[0] - launched_at}


def child(case: str, work: str, epochs: int, result: str) -> None:
    launched_at = float(os.environ["BENCH_LAUNCHED_AT"])
    folder, cache = str(Path(work) / "images"), str(Path(work) / "cache")
    if case == "tutorial":
        figures = run_tutorial(folder, epochs, launched_at)
    else:
        figures = run_image_train(folder, cache, epochs, launched_at)
    figures["rss_gb"] = peak_rss_gb()
    Path(result).write_text(json.dumps(figures))


def measure(case: str, work: Path, epochs: int) -> dict:
    """One case in a child process of its own (bench.run_child); (b) first removes the cache, so that it decodes."""
    if case == "built":
        shutil.rmtree(work / "cache", ignore_errors=True)
    before = cache_files(work)
    try:
        figures = run_child(Path(__file__), ["--child", case, "--work-dir", str(work), "--epochs", str(epochs)])
    except CaseFailed as failure:
        raise SystemExit(f"{CASES[case]} failed:\n{failure}") from None
    if case == "built":
        figures["cache_mb"] = sum(size for size, _ in cache_files(work).values()) / 2**20
    elif case == "reused" and cache_files(work) != before:
        print("warning: (c) wrote to the cache (b) left, so it may have decoded again", file=sys.stderr)
    return figures


def cache_files(work: Path) -> dict:
    """Each file of `train`'s cache under WORK/cache: its size and time of last change."""
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in (work / "cache").rglob("*") if f.is_file()}


def combined(runs: list[dict]) -> dict:
    """One case over all rounds: the median first epoch, the median of every round's epochs 2..E (training pass,
    and for `train` its whole epoch), the largest RSS, the median start to first step."""
    later = statistics.median(s for run in runs for s in run["seconds"][1:])
    whole = [s for run in runs for s in run.get("whole_epochs", [])[1:]]
    samples = runs[0]["samples"]
    return {"samples": samples, "first_epoch": statistics.median(run["first_epoch"] for run in runs),
            "first_step": statistics.median(run["first_step"] for run in runs),
            "later": later, "per_sample": later / samples,
            "whole": statistics.median(whole) if whole else None,
            "whole_per_sample": statistics.median(whole) / samples if whole else None,
            "rss_gb": max(run["rss_gb"] for run in runs), "threads": runs[0].get("threads")}


def load_average() -> str:
    """The system's load average over 1, 5 and 15 minutes: how busy a shared machine was."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line(load_at_start: str) -> str:
    import torch
    import torchvision

    gpu = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU only"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs (load average {load_at_start} at the start, "
            f"{load_average()} at the end), Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads by default), torchvision {torchvision.__version__}, {gpu}")


def table(results: dict, images: int, epochs: int, rounds: int, generated: float | None, cache_mb: float,
          load_at_start: str) -> str:
    threads = results[CASES["built"]]["threads"]
    made = f"generated in {generated:.1f} s" if generated is not None else "reused from --work-dir"
    lines = [f"Image folder: {images:,} grey 28x28 PNGs in {CLASSES} classes ({made}; `train`'s cache "
             f"{cache_mb:.1f} MB). MLP 784-128-64-10, Adam, batch {BATCH_SIZE}, median of {rounds} x {epochs} epochs; "
             f"{machine_line(load_at_start)}; `train` took {threads} CPU thread{'s' if threads != 1 else ''}\n",
             "| case | train samples | launch to end of epoch 1 | µs / folder image, epoch 1 | start to first step "
             "| epochs 2.. s / training pass | µs / training sample | s / epoch with validation and checkpoints "
             "| µs / training sample, whole epoch | peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        whole = (f"{r['whole']:.2f} | {r['whole_per_sample'] * 1e6:.1f}" if r["whole"] is not None else " | ")
        first_per_image = r["first_epoch"] / images * 1e6
        lines.append(f"| {name} | {r['samples']:,} | {r['first_epoch']:.2f} s | {first_per_image:.0f} | "
                     f"{r['first_step']:.2f} s | {r['later']:.2f} | {r['per_sample'] * 1e6:.1f} | {whole} | "
                     f"{r['rss_gb']:.2f} GB |")
    a, b, c = (results[CASES[case]] for case in ("tutorial", "built", "reused"))
    checks = [("(a)/(b) later epochs, per training sample (training pass)", a["per_sample"] / b["per_sample"], True),
              ("(a)/(b) later epochs, per training sample, (b)'s whole epoch", a["per_sample"] / b["whole_per_sample"],
               True),
              ("(a)/(b) first epoch, launch to its end (decoding and caching in (b))",
               a["first_epoch"] / b["first_epoch"], False),
              ("(a)/(c) first epoch, launch to its end (cache reused)", a["first_epoch"] / c["first_epoch"], False),
              ("(b) - (c) start to first step, s: decoding and caching the folder", b["first_step"] - c["first_step"],
               False)]
    lines += ["", "| measure | value | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {value:.2f} | {f'>= {GOAL}' if goal else ''} | "
              f"{('yes' if value >= GOAL else 'NO') if goal else ''} |" for name, value, goal in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The command line above; `scripts/bench.py --only images` passes its --rounds and --out here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2000, help="PNGs per class (10 classes)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per case and round (at least 2)")
    parser.add_argument("--rounds", type=int, default=3, help="times each case runs, in turn with the others")
    parser.add_argument("--quick", action="store_true", help="10 x 200 PNGs, 1 round of 2 epochs")
    parser.add_argument("--work-dir", help="where the folder (images/), its record and `train`'s cache go, kept "
                                           "for later runs; default: a temporary folder, removed at the end")
    parser.add_argument("--out", help="a folder of its own to keep every round's figures (bench.json) and the "
                                      "tables (bench.md) in")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.work_dir, args.epochs, args.result)
    if args.quick:
        args.per_class, args.rounds, args.epochs = 200, 1, 2
    if args.epochs < 2:
        parser.error("--epochs: at least 2, since later epochs are epochs 2..E")
    load_at_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-images-") as scratch:
        work = Path(args.work_dir or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        folder, generated = generate(work, args.per_class)
        images = CLASSES * args.per_class
        print(f"{images:,} PNGs in {folder}: " + (f"generated in {generated:.1f} s with {os.cpu_count()} processes"
                                                   if generated is not None else "reused"), file=sys.stderr)
        # Rounds of (b), (c), (a) in turn, so that a slow spell of a shared machine falls on all three alike.
        rounds = []
        for number in range(args.rounds):
            rounds.append({CASES[case]: measure(case, work, args.epochs) for case in ("built", "reused", "tutorial")})
            print(f"round {number + 1} of {args.rounds} done", file=sys.stderr)
    results = {name: combined([r[name] for r in rounds]) for name in CASES.values()}
    cache_mb = rounds[-1][CASES["built"]]["cache_mb"]
    tables = table(results, images, args.epochs, args.rounds, generated, cache_mb, load_at_start)
    print(tables)
    write_outputs(args.out, {"images": images, "generate_s": generated, "rounds": rounds, "results": results}, tables)


if __name__ == "__main__":
    main()
