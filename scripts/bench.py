"""How fast `train` feeds a model, side by side with the tutorials' plain loop and with the compute floor.

    python scripts/bench.py                  # full-size MNIST stand-in (60,000 + 10,000); 3 rounds of 2 epochs
    python scripts/bench.py --rounds 1 --data-dir ./data   # real MNIST files, if ./data/MNIST/raw has them
    python scripts/bench.py --device cuda --out bench-gpu  # on the GPU: the cases of scripts/bench_cuda.py
    python scripts/bench.py --only tables    # the table readers alone (scripts/bench_tables.py), 1M rows x 21
    python scripts/bench.py --only images    # an image folder of 20,000 PNGs (scripts/bench_images.py)

Three cases, each in its own child process (so that each has its own peak RSS and start-up), taken in turn
for a few rounds, one table:
  (a) tutorial: torchvision MNIST + ToTensor/Normalize + DataLoader(batch_size=64, shuffle=True), the MLP
      784-128-64-10, Adam: the loop of the PyTorch tutorials.
  (b) train:    `train data=mnist model.hidden_sizes=[128,64] optimizer=adam data.batch_size=64`, in full:
      Hydra, validation every epoch, checkpoints, metrics.csv. Its training pass (Engine.train_epoch: batches,
      steps, bookkeeping) is what compares with (a) and (c); its whole epoch, with validation and the
      checkpoint writes (metrics.csv's seconds), is shown beside it.
  (c) floor:    the same forward/backward/step on pre-made float tensors in memory; nothing else. Its Adam
      is fused, as `train` runs Adam on CPU and CUDA (the tutorial's is torch's default, per-tensor), and it
      takes the CPU threads `train` takes (trainer.training.threads; the tutorial keeps torch's default, one per core).
Speed is compared per training sample, since (b) holds out 10% of the train file for validation. After the
rounds, (b) runs once more while another process spins on one core (a shared node, a laptop running other
programs): its training pass against the quiet one says whether `train`'s CPU threads fit a busy machine.
Targets (2-core CPU): (b)/(c) <= 1.15, (a)/(b) >= 5, (b) busy / (b) quiet <= 1.5, peak RSS of (b) <= 1.5 GB,
`train --help` < 1 s.
Then the table readers (scripts/bench_tables.py): data=csv's read of a 1,000,000 x 21 CSV file (and .csv.gz, and
data=parquet's) beside pandas.read_csv, each in a child process of its own. Targets: read_csv's load (import +
read) <= 1.5x pandas.read_csv's, the memory its read takes <= 3x the float32 table.
The image folder (--only images; scripts/bench_images.py says how): `train data=image_folder` on 20,000 generated
28x28 PNGs beside torchvision's ImageFolder loop; target: later epochs >= 5x faster per sample.
Without --data-dir the MNIST files are generated in the real IDX format (trainer.data.formats), offline.
--out DIR keeps every round's figures there (bench.json) and the tables (bench.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

BATCH_SIZE = 64
BUSY = "(b) train, one core busy"
TARGETS = {"floor": 1.15, "tutorial": 5.0, "busy": 1.5, "rss_gb": 1.5, "help_s": 1.0}


class CaseFailed(RuntimeError):
    """A case's child process ended with an error; the message holds its stderr."""


def tutorial_model():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def wait_for(device) -> None:
    """Until the device has run all the work queued on it, so that the clock counts that work (a CPU's is done)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def train_passes(model, optimizer, batches: Callable[[], Iterable], epochs: int, device, launched_at: float,
                 autocast_dtype=None) -> dict:
    """`epochs` passes of the textbook step (zero_grad, forward, loss, backward, step) over `batches()`, a fresh
    iterable of (x, y) on the device for each pass; the forward under autocast to `autocast_dtype` when given, the
    loss in float32 as `train` computes it. Returns each pass's seconds (to the end of the device's work) and the
    time from launch to the first step (queued)."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    first_step, seconds = None, []
    for _ in range(epochs):
        wait_for(device)
        start = time.perf_counter()
        for x, y in batches():
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext():
                loss = loss_fn(model(x).float(), y)
            loss.backward()
            optimizer.step()
            first_step = first_step or time.time()
        wait_for(device)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "first_step": first_step - launched_at}


def shuffled_batches(x_all, y_all, memory_format=None) -> Callable[[], Iterable]:
    """Batches of pre-made tensors as `train` gathers them: a randperm where they live, then index_select (and
    the copy into `memory_format`, when given); a new order for each pass."""
    import torch

    def batches():
        order = torch.randperm(len(x_all), device=x_all.device)
        for i in range(0, len(x_all), BATCH_SIZE):
            index = order[i:i + BATCH_SIZE]
            x = x_all.index_select(0, index)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            yield x, y_all.index_select(0, index)

    return batches


def use_train_threads(device) -> None:
    """torch's CPU threads as `train` takes them for a model on `device` (trainer.threads)."""
    import torch

    from trainer.training.threads import fitting_threads, usable_cpus

    torch.set_num_threads(fitting_threads(usable_cpus(), device))


def run_tutorial(root: str, epochs: int, launched_at: float, device: str = "cpu") -> dict:
    """(a) The plain loop: PIL images through per-sample transforms, collated by the DataLoader, each batch then
    copied to the device."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    device = torch.device(device)
    dataset = datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    model = tutorial_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def batches():
        return ((x.to(device), y.to(device)) for x, y in loader)

    return {"samples": len(dataset), **train_passes(model, optimizer, batches, epochs, device, launched_at)}


def run_floor(root: str, epochs: int, launched_at: float, samples: int, device: str = "cpu",
              autocast_dtype=None, compile: bool = False) -> dict:
    """(c) The compute floor: the same steps on normalised float tensors already in the device's memory (the
    first `samples` of the train file; 0: all), autocast to `autocast_dtype` and compiled as `train` would."""
    import torch
    from torchvision import datasets

    device = torch.device(device)
    use_train_threads(device)
    mnist = datasets.MNIST(root, train=True, download=False)
    x_all = ((mnist.data[:samples or None].float() / 255 - 0.1307) / 0.3081).flatten(1).to(device)  # (N, 784)
    y_all = mnist.targets[:samples or None].to(device)
    model = tutorial_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as `train` runs it on CPU and CUDA
    if compile:
        from trainer.training.compilation import compiled

        model = compiled(model, device)  # as trainer.compile=true does
    return {"samples": len(x_all), **train_passes(model, optimizer, shuffled_batches(x_all, y_all), epochs, device,
                                                  launched_at, autocast_dtype)}


def mnist_train_args(root: str, device: str) -> list[str]:
    """`train`'s arguments for (b): MNIST from `root`, the MLP 784-128-64-10, Adam at the tutorial's settings."""
    return ["data=mnist", f"data.root={root}", "data.download=false", "model=mlp", "model.hidden_sizes=[128,64]",
            "optimizer=adam", "optimizer.lr=0.001", f"data.batch_size={BATCH_SIZE}", "loss.label_smoothing=0",
            f"trainer.device={device}"]


def run_train(args: list[str], epochs: int, launched_at: float) -> dict:
    """(b) The real `train` command with `args`, in this process; the end of its first step is timed through the
    engine."""
    import csv

    import torch

    from trainer import cli
    from trainer.training.engine import Engine

    first_step, seconds = [], []
    train_step, train_epoch = Engine.train_step, Engine.train_epoch

    def timed_train_step(self, *step_args, **step_kwargs):
        loss = train_step(self, *step_args, **step_kwargs)
        if not first_step:
            first_step.append(time.time())
        return loss

    def timed_train_epoch(self, batches):
        start = time.perf_counter()
        loss = train_epoch(self, batches)
        seconds.append(time.perf_counter() - start)
        return loss

    Engine.train_step, Engine.train_epoch = timed_train_step, timed_train_epoch
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    sys.argv = ["train", *args, f"trainer.max_epochs={epochs}", "trainer.early_stopping.patience=null",
                f"hydra.run.dir={run_dir}"]
    cli.train()
    with open(run_dir / "metrics.csv") as file:
        whole_epochs = [float(row["seconds"]) for row in csv.DictReader(file)]
    samples = json.loads((run_dir / "summary.json").read_text())["train_samples"]
    shutil.rmtree(run_dir)
    return {"samples": samples, "seconds": seconds, "whole_epochs": whole_epochs,
            "first_step": first_step[0] - launched_at, "threads": torch.get_num_threads()}


def child(case: str, root: str, epochs: int, samples: int, result: str) -> None:
    launched_at = float(os.environ["BENCH_LAUNCHED_AT"])
    if case == "tutorial":
        figures = run_tutorial(root, epochs, launched_at)
    elif case == "train":
        figures = run_train(mnist_train_args(root, "cpu"), epochs, launched_at)
    else:
        figures = run_floor(root, epochs, launched_at, samples)
    figures["rss_gb"] = peak_rss_gb()
    Path(result).write_text(json.dumps(figures))


def peak_rss_gb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (ru_maxrss would carry
    the parent's peak over the fork); elsewhere ru_maxrss (kilobytes, bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


def run_child(script: Path, args: list[str], timeout: Optional[float] = None) -> dict:
    """`script args --result FILE` in a child process of its own; the figures it wrote there. Raises CaseFailed
    when it fails, subprocess.TimeoutExpired (having killed it) when it runs past `timeout` seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        env = {**os.environ, "BENCH_LAUNCHED_AT": repr(time.time())}
        process = subprocess.run([sys.executable, str(script), *args, "--result", result.name], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if process.returncode != 0:
            raise CaseFailed(process.stderr)
        return json.loads(Path(result.name).read_text())


def measure(case: str, root: Path, epochs: int, samples: int = 0) -> dict:
    """Run one case in a child process of its own."""
    try:
        return run_child(Path(__file__), ["--child", case, "--data-dir", str(root), "--epochs", str(epochs),
                                          "--samples", str(samples)])
    except CaseFailed as failure:
        raise SystemExit(f"{case} failed:\n{failure}") from None


def measure_with_one_core_held(case: str, root: Path, epochs: int) -> dict:
    """`case` while another process spins on one core, as a browser or another job would hold it."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # running before the case starts
        return measure(case, root, epochs)
    finally:
        spinner.kill()
        spinner.wait()


def help_seconds() -> float:
    """Wall time of `train --help` (best of 3), the console script next to this Python."""
    command = shutil.which("train", path=str(Path(sys.executable).parent)) or "train"
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([command, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def write_outputs(out: Optional[str], figures: dict, tables: Optional[str] = None) -> None:
    """--out DIR: the figures as DIR/bench.json and, once there are any, the tables as DIR/bench.md."""
    if out is None:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(figures, indent=1) + "\n")
    if tables is not None:
        (folder / "bench.md").write_text(tables + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: this table; cuda: the GPU's cases and table (scripts/bench_cuda.py)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="times each case runs, in turn with the others")
    parser.add_argument("--data-dir", help="a folder with MNIST/raw (and for cuda cifar-10-batches-py); default: "
                                           "generate stand-in files")
    parser.add_argument("--out", help="a folder to keep every round's figures (bench.json) and the tables in "
                                      "(bench.md)")
    parser.add_argument("--case-timeout", type=float, default=300,
                        help="cuda: seconds a case may run before it is stopped and recorded as failed")
    parser.add_argument("--only", choices=["mnist", "tables", "images"],
                        help="cpu: only the MNIST cases, only the table readers, or only the image folder "
                             "(scripts/bench_images.py, which has more options of its own)")
    parser.add_argument("--table-rows", type=int, default=1_000_000,
                        help="rows of the table readers' table (21 columns)")
    parser.add_argument("--child", choices=["tutorial", "train", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data_dir, args.epochs, args.samples, args.result)
    if args.device == "cuda":
        import bench_cuda  # (next to this file, which Python puts first on sys.path)

        return bench_cuda.main(args)
    if args.only == "images":
        import bench_images  # (next to this file)

        return bench_images.main(["--rounds", str(args.rounds), *(["--out", args.out] if args.out else [])])
    figures, parts, checks = {}, [], []
    if args.only != "tables":
        figures = mnist(args)
        lines, checks = table(figures["results"], figures["help_s"], args.epochs, args.rounds)
        parts.append("\n".join(lines))
    if args.only != "mnist":
        import bench_tables  # (next to this file)

        figures["tables"] = bench_tables.measure(args.table_rows, 21, args.rounds)
        lines, table_checks = bench_tables.table(figures["tables"])
        parts.append("\n".join(lines))
        checks += table_checks
    tables = "\n\n".join([*parts, checks_table(checks)])
    print(tables)
    write_outputs(args.out, figures, tables)


def mnist(args: argparse.Namespace) -> dict:
    """The MNIST cases (a), (b), (c) over the rounds, (b) once more with a core held, and `train --help`."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_dir) if args.data_dir else Path(scratch)
        if not args.data_dir:
            from trainer.data.formats import write_mnist

            write_mnist(root, train=60_000, test=10_000)
        # Rounds of a, b, c in turn, so that a slow spell of a shared machine falls on all three alike.
        rounds = []
        for _ in range(args.rounds):
            train = measure("train", root, args.epochs)
            rounds.append({"(a) tutorial": measure("tutorial", root, args.epochs), "(b) train": train,
                           "(c) floor": measure("floor", root, args.epochs, samples=train["samples"])})
        busy = measure_with_one_core_held("train", root, args.epochs)
    results = {name: combined([r[name] for r in rounds]) for name in rounds[0]}
    results[BUSY] = combined([busy])
    return {"rounds": rounds, BUSY: busy, "help_s": help_seconds(), "results": results}


def combined(runs: list[dict]) -> dict:
    """One case over all rounds: the median epoch, the largest RSS, the median start-up."""
    epoch = statistics.median(seconds for run in runs for seconds in run["seconds"])
    samples = runs[0]["samples"]
    whole = [seconds for run in runs for seconds in run.get("whole_epochs", [])]
    return {"samples": samples, "epoch": epoch, "per_sample": epoch / samples, "samples_per_s": samples / epoch,
            "whole_epoch": statistics.median(whole) if whole else None,
            "rss_gb": max(run["rss_gb"] for run in runs), "threads": runs[0].get("threads"),
            "first_step": statistics.median(run["first_step"] for run in runs)}


def table(results: dict, help_s: float, epochs: int, rounds: int) -> tuple[list[str], list[tuple]]:
    """The MNIST cases' table, and their checks against TARGETS: (measure, value, target, met)."""
    import torch

    lines = [f"MNIST MLP 784-128-64-10, Adam, batch {BATCH_SIZE}, median of {rounds} x {epochs} epochs; "
             f"{platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads by default, "
             f"{results['(b) train']['threads']} in `train`), "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}\n",
             "| case | train samples | s / training pass | samples / s | s / epoch with validation and checkpoints "
             "| peak RSS | start to first step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        whole = f"{r['whole_epoch']:.2f}" if r["whole_epoch"] is not None else ""
        lines.append(f"| {name} | {r['samples']:,} | {r['epoch']:.2f} | {r['samples_per_s']:,.0f} | {whole} | "
                     f"{r['rss_gb']:.2f} GB | {r['first_step']:.2f} s |")
    a, b, c, busy = (results[name]["per_sample"] for name in ("(a) tutorial", "(b) train", "(c) floor", BUSY))
    checks = [
        ("(b)/(c) time per sample", f"{b / c:.2f}", f"<= {TARGETS['floor']}", b / c <= TARGETS["floor"]),
        ("(b) busy / (b) quiet", f"{busy / b:.2f}", f"<= {TARGETS['busy']}", busy / b <= TARGETS["busy"]),
        ("(a)/(b) time per sample", f"{a / b:.2f}", f">= {TARGETS['tutorial']}", a / b >= TARGETS["tutorial"]),
        ("(a)/(c): the most any loop could gain", f"{a / c:.2f}", "", None),
        ("peak RSS of (b)", f"{results['(b) train']['rss_gb']:.2f} GB", f"<= {TARGETS['rss_gb']} GB",
         results["(b) train"]["rss_gb"] <= TARGETS["rss_gb"]),
        ("`train --help`", f"{help_s:.2f} s", f"< {TARGETS['help_s']} s", help_s < TARGETS["help_s"]),
    ]
    return lines, checks


def checks_table(checks: list[tuple]) -> str:
    """Each measure against its target: met (yes), not met (NO), or no target."""
    lines = ["| measure | value | target | met |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {value} | {target} | {'' if met is None else 'yes' if met else 'NO'} |"
              for name, value, target, met in checks]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
