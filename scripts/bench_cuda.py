"""The GPU's cases of scripts/bench.py: `python scripts/bench.py --device cuda [--rounds N] [--epochs E] [--out DIR]`.

How fast `train` trains on a CUDA device, beside the compute floor and the tutorials' loop. Each case runs in a
child process of its own (its own start-up, peak memory and CUDA context), the cases in turn for --rounds rounds
of --epochs epochs. A run's first pass warms up (cuDNN autotuning, torch.compile, the caching allocator): it is
shown apart, and the figures are the medians of the passes after it.

MNIST (stand-in IDX files, 60,000 + 10,000, or --data-dir), the MLP 784-128-64-10, Adam, batch 64:
  MLP train, fp32 / bf16 / compiled: the real `train` command of bench.py's (b), on the GPU, with
      trainer.precision=bf16 or trainer.compile=true.
  MLP floor, fp32 / bf16 / compiled: the same steps on normalised float tensors already on the GPU, gathered by
      index_select from a randperm on the GPU, fused Adam (as `train` runs it), with the same autocast or
      torch.compile; beside each `train` case in the same round, over as many samples.
  MLP tutorial: bench.py's (a) with each batch copied to the GPU, for reference.
CIFAR-10 (stand-in files in its pickled format, 50,000 + 10,000, or --data-dir), trainer.models.ResNet at
configs/model/resnet.yaml's defaults, Adam, batch 64, no label smoothing, bf16 autocast, channels_last memory and
cuDNN autotuning in all three cases, so that they differ in the data path only:
  ResNet train: `train data=cifar10 model=resnet trainer.precision=bf16 trainer.channels_last=true`, with the
      set's default augmentation (random crop and flip, batched on the GPU); the other two have none.
  ResNet floor: normalised float tensors already on the GPU, as the MLP's floor.
  ResNet tutorial: torchvision CIFAR10 + ToTensor/Normalize + DataLoader(batch_size=64, shuffle=True,
      num_workers=2), the PyTorch tutorial's data path, each batch copied to the GPU in channels_last.
Host-device syncs: before the rounds, `train` of the MLP (fp32) runs one epoch more under
torch.cuda.set_sync_debug_mode("warn"), each warning counted against the step it fired in (from the start of its
train_step to the start of the next one). Steps that read the loss (every trainer.log_every_n_steps), save a
checkpoint (trainer.checkpoint.every_n_steps) or check gradient health (step 1 and every
trainer.health.every_n_steps) may sync; the other steps should not (target 0). Syncs before the first step and
after the last one (the epoch's loss is read once, at its end) are counted apart.
Targets: each MLP `train` case's training pass < 0.3 s, and within 1.2x of its floor per sample; ResNet `train`
is reported beside its tutorial loop and its floor, without a target.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import bench
from bench import BATCH_SIZE

DEVICE = "cuda"
SYNCS = "syncs"
"""The child that counts the syncs of a `train` epoch."""
SYNC_WARNING = "called a synchronizing CUDA operation"
"""What torch warns, in sync debug mode "warn", at each operation that waits for the device."""
TARGETS = {"mlp_pass_s": 0.3, "mlp_floor": 1.2, "syncs": 0}
MET = {True: "yes", False: "NO", None: ""}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    """train, floor or tutorial."""
    data: str
    """mnist (the MLP) or cifar10 (the ResNet)."""
    precision: str = "32"
    """trainer.precision: 32 or bf16."""
    compile: bool = False
    floor: Optional[str] = None
    """The floor case it is compared with."""


# A floor follows its `train` case, whose number of training samples it takes in the same round. The compiled
# cases come last: they take longest, and a failure to compile costs the others nothing.
CASES = (
    Case("MLP train, fp32", "train", "mnist", floor="MLP floor, fp32"),
    Case("MLP floor, fp32", "floor", "mnist"),
    Case("MLP train, bf16", "train", "mnist", "bf16", floor="MLP floor, bf16"),
    Case("MLP floor, bf16", "floor", "mnist", "bf16"),
    Case("MLP tutorial, fp32", "tutorial", "mnist", floor="MLP floor, fp32"),
    Case("ResNet train, bf16", "train", "cifar10", "bf16", floor="ResNet floor, bf16"),
    Case("ResNet floor, bf16", "floor", "cifar10", "bf16"),
    Case("ResNet tutorial, bf16", "tutorial", "cifar10", "bf16", floor="ResNet floor, bf16"),
    Case("MLP train, compiled", "train", "mnist", compile=True, floor="MLP floor, compiled"),
    Case("MLP floor, compiled", "floor", "mnist", compile=True),
)
CASE_BY_NAME = {case.name: case for case in CASES}
MLP_TRAIN = [case.name for case in CASES if case.kind == "train" and case.data == "mnist"]


def cifar_train_args(root: str) -> list[str]:
    """`train`'s arguments for the ResNet case: CIFAR-10 from `root`, model=resnet, Adam, batch 64, channels_last."""
    return ["data=cifar10", f"data.root={root}", "data.download=false", "model=resnet", "optimizer=adam",
            "optimizer.lr=0.001", f"data.batch_size={BATCH_SIZE}", "loss.label_smoothing=0",
            f"trainer.device={DEVICE}", "trainer.channels_last=true"]


def train_args(case: Case, root: str) -> list[str]:
    args = bench.mnist_train_args(root, DEVICE) if case.data == "mnist" else cifar_train_args(root)
    return args + [f"trainer.precision={case.precision}"] + (["trainer.compile=true"] if case.compile else [])


def resnet_and_adam():
    """The ResNet of model=resnet for 3x32x32 images and 10 classes, on the GPU in channels_last memory, with
    fused Adam at `train`'s settings; cuDNN autotuning on, as `train` sets it on CUDA."""
    import torch

    from trainer.models import ResNet

    torch.backends.cudnn.benchmark = True
    model = ResNet((3, 32, 32), 10).to(DEVICE, memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def run_cifar_tutorial(root: str, epochs: int, launched_at: float, autocast_dtype) -> dict:
    """The tutorial's data path: PIL images through per-sample transforms in two DataLoader workers, each batch
    copied to the GPU."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    device = torch.device(DEVICE)
    dataset = datasets.CIFAR10(root, train=True, download=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=2)
    model, optimizer = resnet_and_adam()

    def batches():
        return ((x.to(device, memory_format=torch.channels_last), y.to(device)) for x, y in loader)

    return {"samples": len(dataset), **bench.train_passes(model, optimizer, batches, epochs, device, launched_at,
                                                          autocast_dtype)}


def run_cifar_floor(root: str, epochs: int, launched_at: float, samples: int, autocast_dtype) -> dict:
    """The ResNet's compute floor: the first `samples` train images (0: all) as normalised floats on the GPU."""
    import torch
    from torchvision import datasets

    device = torch.device(DEVICE)
    bench.use_train_threads(device)
    cifar = datasets.CIFAR10(root, train=True, download=False)
    images = torch.from_numpy(cifar.data[:samples or None]).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    x_all = ((images.float() / 255 - 0.5) / 0.5).to(device)
    y_all = torch.tensor(cifar.targets[:samples or None]).to(device)
    model, optimizer = resnet_and_adam()
    batches = bench.shuffled_batches(x_all, y_all, torch.channels_last)
    return {"samples": len(x_all), **bench.train_passes(model, optimizer, batches, epochs, device, launched_at,
                                                        autocast_dtype)}


def accept_stand_in_cifar10() -> None:
    """torchvision checks the CIFAR-10 files against the real ones' MD5 sums, which write_cifar10's stand-ins cannot
    match: it is to check that they are there only (as the test suite has it; real files read the same)."""
    from torchvision.datasets import CIFAR10

    for split in ("train_list", "test_list"):
        setattr(CIFAR10, split, [[name, None] for name, _ in getattr(CIFAR10, split)])
    CIFAR10.meta = {**CIFAR10.meta, "md5": None}


def run_case(case: Case, root: str, epochs: int, launched_at: float, samples: int) -> dict:
    from trainer.training.precision import AUTOCAST_DTYPES

    autocast_dtype = AUTOCAST_DTYPES[case.precision]
    if case.data == "cifar10":
        accept_stand_in_cifar10()
    if case.kind == "train":
        return bench.run_train(train_args(case, root), epochs, launched_at)
    if case.kind == "tutorial" and case.data == "mnist":
        return bench.run_tutorial(root, epochs, launched_at, DEVICE)
    if case.kind == "tutorial":
        return run_cifar_tutorial(root, epochs, launched_at, autocast_dtype)
    if case.data == "mnist":
        return bench.run_floor(root, epochs, launched_at, samples, DEVICE, autocast_dtype, case.compile)
    return run_cifar_floor(root, epochs, launched_at, samples, autocast_dtype)


def run_syncs(root: str, launched_at: float) -> dict:
    """One epoch of the MLP's `train` (fp32) with every host-device sync of its training pass recorded: the step
    it fired in, whether inside train_step or in the loop around it, and the line of Python that asked for it."""
    import torch

    from trainer.observe.health import GradientHealth
    from trainer.training.engine import Engine

    syncs: list[dict] = []
    now = {"step": 0, "in_step": False}
    kinds: dict[int, str] = {}
    """Each step's work besides training, as the engine decides it: log, checkpoint, health ("" for none)."""
    train_step, train_epoch = Engine.train_step, Engine.train_epoch
    show = warnings.showwarning

    def counted_train_step(self, *args, **kwargs):
        step = self.global_step + 1
        every = self.settings.checkpoint.every_n_steps
        kinds[step] = "+".join(kind for kind, due in (
            ("log", step % self.settings.log_every_n_steps == 0),
            ("checkpoint", every is not None and step % every == 0),
            ("health", any(isinstance(o, GradientHealth) and o.due(step) for o in self.observers))) if due)
        now.update(step=step, in_step=True)
        try:
            return train_step(self, *args, **kwargs)
        finally:
            now["in_step"] = False

    def recorded(message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING not in str(message):
            return show(message, category, filename, lineno, file, line)
        syncs.append({**now, "where": "/".join(Path(filename).parts[-2:]) + f":{lineno}"})

    def counted_train_epoch(self, batches):
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every sync, not the first from each line
            warnings.showwarning = recorded
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return train_epoch(self, batches)
            finally:
                torch.cuda.set_sync_debug_mode("default")

    Engine.train_step, Engine.train_epoch = counted_train_step, counted_train_epoch
    figures = bench.run_train(bench.mnist_train_args(root, DEVICE), 1, launched_at)
    return {**figures, "steps": len(kinds), "step_kinds": {kind: sum(1 for k in kinds.values() if k == kind)
                                                           for kind in set(kinds.values())},
            "syncs": [{**sync, "kind": "before the first step" if sync["step"] == 0 else
                       "after the last step" if sync["step"] == len(kinds) and not sync["in_step"] else
                       kinds[sync["step"]]} for sync in syncs]}


def child(name: str, root: str, epochs: int, samples: int, result: str) -> None:
    import torch

    launched_at = float(os.environ["BENCH_LAUNCHED_AT"])
    if name == SYNCS:
        figures = run_syncs(root, launched_at)
    else:
        figures = run_case(CASE_BY_NAME[name], root, epochs, launched_at, samples)
    figures["rss_gb"] = bench.peak_rss_gb()
    figures["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    Path(result).write_text(json.dumps(figures))


def measure(name: str, root: Path, epochs: int, timeout: float, samples: int = 0) -> dict:
    """One case in a child process of its own; a case that fails or runs out of time is recorded as such (its
    error's last lines), and the others go on."""
    try:
        return bench.run_child(Path(__file__), ["--child", name, "--data-dir", str(root), "--epochs", str(epochs),
                                                "--samples", str(samples)], timeout)
    except bench.CaseFailed as failure:
        lines = str(failure).strip().splitlines() or ["(no message)"]
        return {"failed": lines[-1][:200], "stderr_tail": lines[-30:]}
    except subprocess.TimeoutExpired:
        return {"failed": f"stopped after {timeout:.0f} s (--case-timeout)"}


def main(args) -> None:
    """bench.py --device cuda: every case over the rounds, then the tables; the figures kept in --out as they
    come, so that a bench stopped part way leaves what it measured."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"bench.py --device cuda: no CUDA device is visible here (torch {torch.__version__}, "
                         f"CUDA {torch.version.cuda or 'not built in'}); nothing was measured")
    if args.epochs < 2:
        raise SystemExit("bench.py --device cuda: --epochs must be 2 or more (the first pass warms up)")
    record = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "epochs": args.epochs, "rounds": [], "syncs": None}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_dir) if args.data_dir else Path(scratch)
        if not args.data_dir:
            from trainer.data.formats import write_cifar10, write_mnist

            write_mnist(root, train=60_000, test=10_000)
            write_cifar10(root, train=50_000, test=10_000)
        record["syncs"] = measure(SYNCS, root, 1, args.case_timeout)
        bench.write_outputs(args.out, record)
        for _ in range(args.rounds):
            figures, train_samples = {}, {}
            record["rounds"].append(figures)
            for case in CASES:
                samples = train_samples.get(case.data, 0) if case.kind == "floor" else 0
                figures[case.name] = measure(case.name, root, args.epochs, args.case_timeout, samples)
                if case.kind == "train" and "samples" in figures[case.name]:
                    train_samples[case.data] = figures[case.name]["samples"]
                bench.write_outputs(args.out, record)
    record["results"] = {case.name: combined([r[case.name] for r in record["rounds"]]) for case in CASES}
    for case in CASES:
        result, floor = record["results"][case.name], record["results"].get(case.floor, {})
        if case.floor and "per_sample" in result and "per_sample" in floor:
            result["x_floor"] = result["per_sample"] / floor["per_sample"]
    record["sync_counts"] = sync_counts(record["syncs"])
    record["checks"] = checks(record["results"], record["sync_counts"])
    tables = table(record, args.rounds)
    print(tables)
    bench.write_outputs(args.out, record, tables)
    failed = [name for name, result in record["results"].items() if "failed" in result]
    if failed or "failed" in record["syncs"]:
        sys.exit(f"failed: {', '.join(failed + ([SYNCS] if 'failed' in record['syncs'] else []))}")


def combined(runs: list[dict]) -> dict:
    """One case over the rounds it did not fail in: bench.combined over the passes after each run's first, the
    first passes' median apart, the largest peak GPU memory."""
    done = [run for run in runs if "failed" not in run]
    if not done:
        return {"failed": runs[0]["failed"]}
    warm = [{**run, "seconds": run["seconds"][1:], "whole_epochs": run.get("whole_epochs", [])[1:]} for run in done]
    return {**bench.combined(warm), "first_pass": statistics.median(run["seconds"][0] for run in done),
            "gpu_peak_gb": max(run["gpu_peak_gb"] for run in done), "failed_rounds": len(runs) - len(done)}


def sync_counts(figures: dict) -> dict:
    """The syncs of the counted epoch by kind of step: how many steps of each kind, how many syncs in them, and
    the lines that asked for them."""
    if "failed" in figures:
        return {"failed": figures["failed"]}
    counts = {}
    for kind in sorted({sync["kind"] for sync in figures["syncs"]} | set(figures["step_kinds"])):
        found = [sync for sync in figures["syncs"] if sync["kind"] == kind]
        counts[kind or "other"] = {"steps": figures["step_kinds"].get(kind), "syncs": len(found),
                                   "where": dict(Counter(sync["where"] for sync in found).most_common())}
    return counts


def checks(results: dict, syncs: dict) -> list[dict]:
    """The measures with their targets: value (text), target (text), met (True, False, or None without a target
    or a figure)."""
    rows = []

    def add(measure: str, value: Optional[str], target: str = "", met: Optional[bool] = None) -> None:
        rows.append({"measure": measure, "value": "n/a (failed)" if value is None else value, "target": target,
                     "met": None if value is None else met})

    for name in MLP_TRAIN:
        r = results[name]
        epoch, ratio = r.get("epoch"), r.get("x_floor")
        add(f"{name}: training pass", None if epoch is None else f"{epoch:.3f} s", f"< {TARGETS['mlp_pass_s']} s",
            epoch is not None and epoch < TARGETS["mlp_pass_s"])
        add(f"{name} / its floor, time per sample", None if ratio is None else f"{ratio:.2f}",
            f"<= {TARGETS['mlp_floor']}", ratio is not None and ratio <= TARGETS["mlp_floor"])
    mlp, tutorial = results["MLP train, fp32"], results["MLP tutorial, fp32"]
    add("MLP tutorial / MLP train, fp32, time per sample", f"{tutorial['per_sample'] / mlp['per_sample']:.2f}"
        if "per_sample" in mlp and "per_sample" in tutorial else None)
    resnet, tutorial = results["ResNet train, bf16"], results["ResNet tutorial, bf16"]
    add("ResNet train / ResNet tutorial, samples per second",
        f"{resnet['samples_per_s']:,.0f} / {tutorial['samples_per_s']:,.0f} = "
        f"{resnet['samples_per_s'] / tutorial['samples_per_s']:.2f}"
        if "samples_per_s" in resnet and "samples_per_s" in tutorial else None)
    add("ResNet train / its floor, time per sample", f"{resnet['x_floor']:.2f}" if "x_floor" in resnet else None)
    if "failed" in syncs:
        add("syncs in steps that neither log, checkpoint nor check health", None, f"{TARGETS['syncs']}")
        return rows

    def where(counted: dict) -> str:
        return f" ({', '.join(f'{line} x{count}' for line, count in counted['where'].items())})" if counted["where"] \
            else ""

    other = syncs.get("other", {"steps": 0, "syncs": 0, "where": {}})
    add("syncs in steps that neither log, checkpoint nor check health",
        f"{other['syncs']} in {other['steps']} steps{where(other)}", f"{TARGETS['syncs']}",
        other["syncs"] <= TARGETS["syncs"])
    for kind, counted in syncs.items():
        if kind != "other" and counted["steps"]:
            add(f"syncs per {kind} step", f"{counted['syncs'] / counted['steps']:.1f} over {counted['steps']} steps"
                                          f"{where(counted)}")
        elif kind != "other":
            add(f"syncs {kind}", f"{counted['syncs']}{where(counted)}")
    return rows


def table(record: dict, rounds: int) -> str:
    def seconds(value: Optional[float], digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    lines = [f"{record['device']}, torch {record['torch']}, CUDA {record['cuda']}, cuDNN {record['cudnn']}; "
             f"batch {BATCH_SIZE}; medians over {rounds} round(s) of the passes after each run's first (of "
             f"{record['epochs']})\n",
             "| case | train samples | s / training pass | samples / s | first pass (warm-up) | s / epoch with "
             "validation and checkpoints | x its floor, time per sample | peak GPU memory | peak RSS | start to "
             "first step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in record["results"].items():
        if "failed" in r:
            lines.append(f"| {name} | failed: {r['failed'].replace('|', '/')} |" + " |" * 8)
            continue
        failed_rounds = f" ({r['failed_rounds']} round(s) failed)" if r["failed_rounds"] else ""
        ratio = f"{r['x_floor']:.2f}" if "x_floor" in r else ""
        lines.append(f"| {name}{failed_rounds} | {r['samples']:,} | {r['epoch']:.3f} | {r['samples_per_s']:,.0f} | "
                     f"{r['first_pass']:.2f} | {seconds(r['whole_epoch'])} | {ratio} | {r['gpu_peak_gb']:.2f} GB | "
                     f"{r['rss_gb']:.2f} GB | {r['first_step']:.2f} s |")
    lines += ["", "| measure | value | target | met |", "|---|---|---:|---|"]
    lines += [f"| {c['measure']} | {c['value']} | {c['target']} | {MET[c['met']]} |" for c in record["checks"]]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="a child of `bench.py --device cuda`: one case")
    parser.add_argument("--child", required=True, choices=[*CASE_BY_NAME, SYNCS])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--result", required=True)
    parsed = parser.parse_args()
    child(parsed.child, parsed.data_dir, parsed.epochs, parsed.samples, parsed.result)
